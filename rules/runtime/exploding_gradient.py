from __future__ import annotations

import collections
import math
import statistics

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class ExplodingGradient(RuntimeCheck):
    """## What it does
    Compares the global gradient norm with the run's own recent history (a jump by more than
    `factor` over the median of the last `window` steps, after `warmup` steps) and with an
    absolute bound `max_norm`, and each parameter's gradient norm with its own running mean. It
    reports while the values are still finite, naming the parameter with the largest jump. A
    parameter's jump is reported on its own only when that parameter carries at least
    `min_share` of the global gradient norm.

    ## Why is this bad?
    A gradient that suddenly grows by orders of magnitude is the step before a loss spike or a
    NaN: a learning rate too high for the current curvature, a bad batch, a missing
    normalisation, an attention logit overflowing. Catching it while finite leaves time to clip
    or to skip the batch.

    ## Known problems
    The first `warmup` checked steps only build history. Training regimes with deliberately
    rising gradient norms (curricula, lr warm-up from zero) can need a larger `factor`.
    Gradients that start near zero and grow as the model learns (attention queries and keys,
    LayerScale branches) jump by thousands of times their early mean while staying a few
    percent of the global norm: `min_share` keeps them out.

    ## References
    - https://arxiv.org/abs/1211.5063
    - https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
    """

    code = "TA705"
    name = "exploding-gradient"
    severity = Severity.WARNING
    message = "{what} gradient norm {norm:.3g} is {detail}"
    fix_title = "Clip gradients (clip_grad_norm_), lower the learning rate, or inspect the batch"
    events = frozenset({"step_pre"})
    uses_grad_norms = True
    options = {
        "factor": Option(10.0, "report a norm this many times above the recent median", float),
        "warmup": Option(5, "checked steps of history before comparing", int),
        "window": Option(50, "steps of history for the median", int),
        "max_norm": Option(1e4, "absolute bound for the global norm (0 disables)", float),
        "min_share": Option(0.1, "share of the global norm a parameter needs for its own jump to be reported", float),
    }

    def setup(self) -> None:
        self._history: collections.deque = collections.deque(maxlen=max(1, self.opts["window"]))
        self._param_hist: dict[tuple, list] = {}

    def on_step_pre(self, ctx) -> None:
        if not ctx.checked:
            return
        self.defer(ctx.grad_norms(), lambda values: self._check(ctx, values))

    def _check(self, ctx, values: list[float]) -> None:
        has = ctx.has_grad
        present = [(i, v) for i, (v, h) in enumerate(zip(values, has)) if h]
        if not present or not all(math.isfinite(v) for _, v in present):
            return
        factor, warmup, max_norm = self.opts["factor"], self.opts["warmup"], self.opts["max_norm"]
        total = math.sqrt(sum(v * v for _, v in present))
        # per-parameter jumps against each parameter's running mean (cheap: no sorting)
        jumps = []
        stats = self._param_hist
        for i, v in present:
            key = (ctx.label, i)
            entry = stats.get(key)
            if entry is None:
                stats[key] = [1, v]
                continue
            n, mean = entry
            if n >= warmup and mean > 0 and v > factor * mean:
                jumps.append((v / mean, i, v, mean))
                continue
            entry[0] = n + 1
            entry[1] = mean + (v - mean) / min(n + 1, self._history.maxlen)
        jumps.sort(reverse=True)
        hist = self._history
        fired = False
        if len(hist) >= warmup:
            med = statistics.median(hist)
            if med > 0 and total > factor * med:
                detail = f"{total / med:.0f}x the median {med:.3g} of the last {len(hist)} steps"
                if jumps:
                    ratio, i, _, _ = jumps[0]
                    detail += f"; largest jump in {ctx.name(ctx.params[i], i)} ({ratio:.0f}x)"
                self._report(ctx, "global", total, detail, jumps)
                fired = True
        if not fired and max_norm and total > max_norm:
            self._report(ctx, "global", total, f"above max_norm={max_norm:g}", jumps)
            fired = True
        if not fired:
            hist.append(total)
            for ratio, i, v, med in jumps:
                if v < self.opts["min_share"] * total:
                    continue  # a jump of a negligible part of the gradient explodes nothing
                name = ctx.name(ctx.params[i], i)
                self.report(
                    name, step=ctx.step, module=self.session.index.owner(ctx.params[i]), value=v,
                    message=self.message.format(
                        what=name, norm=v, detail=f"{ratio:.0f}x its running mean {med:.3g}"
                    ),
                )

    def _report(self, ctx, subject: str, total: float, detail: str, jumps: list) -> None:
        owner = self.session.index.owner(ctx.params[jumps[0][1]]) if jumps else None
        self.report(f"{ctx.label}:{subject}", step=ctx.step, module=owner, value=total,
                    message=self.message.format(what="global", norm=total, detail=detail))
