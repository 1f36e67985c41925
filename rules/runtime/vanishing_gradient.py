from __future__ import annotations

import math
import statistics

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class VanishingGradient(RuntimeCheck):
    """## What it does
    Reports gradients that vanish for `patience` checked steps in a row: a global gradient norm
    below `min_norm`, or a weight matrix (a parameter with two or more dimensions) whose gradient
    norm is below `ratio` times the median weight gradient norm of the same optimizer.

    ## Why is this bad?
    Layers whose gradients are many orders of magnitude smaller than the rest do not learn: a
    deep stack of saturating activations (sigmoid, tanh), a bad initialisation, a missing
    residual connection or normalisation, a detached branch multiplied by a tiny constant.
    The loss still moves (the last layers learn), so nothing looks wrong.

    ## Known problems
    Biases and other one-dimensional parameters are left out on purpose: a bias followed by
    BatchNorm legitimately gets a zero gradient (that is the static rule about redundant biases).
    Parameters without a gradient are `unused-parameter`'s business.

    The reference is the median, not the largest, weight gradient: embeddings and output layers
    get gradients orders of magnitude above the rest, and a freshly initialised attention layer
    (near-uniform attention) or a LayerScale branch legitimately sits far below them. Real
    models at initialisation (BERT, BART, ConvNeXt, Llama) stay above 1e-3 of the median; twelve
    sigmoid layers reach 1e-8.

    ## References
    - https://proceedings.mlr.press/v9/glorot10a.html
    - https://arxiv.org/abs/1211.5063
    """

    code = "TA706"
    name = "vanishing-gradient"
    severity = Severity.WARNING
    message = "{what} gradient norm {norm:.3g} {detail} for {steps} steps"
    fix_title = "Use non-saturating activations, residual connections, normalisation or a better init"
    events = frozenset({"step_pre"})
    uses_grad_norms = True
    options = {
        "min_norm": Option(1e-10, "global gradient norm below which gradients vanished", float),
        "ratio": Option(1e-5, "weight gradient norm relative to the median one", float),
        "patience": Option(3, "consecutive checked steps before reporting", int),
    }

    def setup(self) -> None:
        self._global_streak: dict[str, int] = {}
        self._streak: dict[tuple, int] = {}

    def on_step_pre(self, ctx) -> None:
        if not ctx.checked:
            return
        self.defer(ctx.grad_norms(), lambda values: self._check(ctx, values))

    def _check(self, ctx, values: list[float]) -> None:
        present = [(i, v) for i, (v, h) in enumerate(zip(values, ctx.has_grad)) if h]
        if not present or not all(math.isfinite(v) for _, v in present):
            return
        patience = self.opts["patience"]
        total = math.sqrt(sum(v * v for _, v in present))
        streak = self._global_streak.get(ctx.label, 0) + 1 if total < self.opts["min_norm"] else 0
        self._global_streak[ctx.label] = streak
        if streak >= patience:
            self.report(f"{ctx.label}:global", step=ctx.step, value=total,
                        message=self.message.format(
                            what="global", norm=total,
                            detail=f"below min_norm={self.opts['min_norm']:g}", steps=streak))
        weights = [(i, v) for i, v in present if ctx.params[i].dim() >= 2]
        if len(weights) < 2:
            return
        typical = statistics.median(v for _, v in weights)
        if typical <= 0:
            return
        for i, v in weights:
            key = (ctx.label, i)
            if v < self.opts["ratio"] * typical:
                n = self._streak[key] = self._streak.get(key, 0) + 1
                if n >= patience:
                    name = ctx.name(ctx.params[i], i)
                    self.report(
                        name, step=ctx.step, module=self.session.index.owner(ctx.params[i]),
                        value=v,
                        message=self.message.format(
                            what=name, norm=v,
                            detail=f"is {v / typical:.1e} of the median weight gradient ({typical:.3g})",
                            steps=n),
                    )
            else:
                self._streak[key] = 0
