from __future__ import annotations

import math

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class UpdateToWeightRatio(RuntimeCheck):
    """## What it does
    Measures, for each weight matrix (parameters with two or more dimensions), the norm of the update an optimizer step applied divided by
    the norm of the weights, and reports parameters whose ratio exceeds `max_ratio`.

    ## Why is this bad?
    A healthy update changes a weight matrix by roughly a thousandth of its size per step. An
    update of the same order as the weights rewrites the layer every step: the learning rate is
    far too high for it (a missing per-layer scaling, an embedding with a huge lr, a bias in a
    group without weight decay but with a scaled lr).

    ## Known problems
    Opt-in: it copies the parameters before each sampled step (memory and time), so it runs
    every `sample_every` steps. Biases and normalisation parameters (one-dimensional, often
    initialised at or near zero) and weights that are (near) zero are skipped.

    ## References
    - https://cs231n.github.io/neural-networks-3/#ratio
    """

    code = "TA711"
    name = "update-to-weight-ratio"
    severity = Severity.WARNING
    status = "preview"
    opt_in = True
    message = "{param}: the step changed the weights by {ratio:.3g} of their norm (above {max_ratio:g})"
    fix_title = "Lower this parameter group's learning rate"
    events = frozenset({"step_pre", "step_post"})
    options = {
        "max_ratio": Option(0.1, "largest acceptable update norm / weight norm", float),
        "sample_every": Option(10, "measure every N-th step", int),
    }

    def setup(self) -> None:
        self._before: dict[str, tuple] = {}

    def close(self) -> None:
        self._before = {}

    def on_step_pre(self, ctx) -> None:
        if ctx.step % self.opts["sample_every"]:
            return
        import torch

        idx = [i for i, h in enumerate(ctx.has_grad)
               if h and ctx.params[i].is_floating_point() and ctx.params[i].dim() >= 2]
        if not idx:
            return
        with torch.no_grad():
            copies = [ctx.params[i].detach().clone() for i in idx]
        self._before[ctx.label] = (idx, copies)

    def on_step_post(self, ctx) -> None:
        entry = self._before.pop(ctx.label, None)
        if entry is None:
            return
        import torch

        from torch_audit.runtime.check_helpers import norms

        idx, before = entry
        after = [ctx.params[i].detach() for i in idx]
        with torch.no_grad():
            delta = torch._foreach_sub(after, before)
            dn = torch.stack(norms(delta))
            wn = torch.stack(norms(after))
            ratio = torch.where(wn > 1e-12, dn / wn.clamp_min(1e-12), torch.zeros_like(dn))

        def check(values: list[float]) -> None:
            for i, r in zip(idx, values):
                if math.isfinite(r) and r > self.opts["max_ratio"]:
                    name = ctx.name(ctx.params[i], i)
                    self.report(name, step=ctx.step, value=r,
                                module=self.session.index.owner(ctx.params[i]),
                                param=name, ratio=r, max_ratio=self.opts["max_ratio"])

        self.defer(ratio, check)
