from __future__ import annotations

import math
import statistics

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class LossDiverging(RuntimeCheck):
    """## What it does
    Follows the (finite) loss per optimizer step and reports when its running median over
    `window` steps stays above `factor` times the best running median seen so far for
    `patience` checked steps in a row.

    ## Why is this bad?
    A loss that climbs steadily while staying finite is the slow version of a NaN: a learning
    rate too high for this phase, a schedule that restarts too hot, accumulated gradients. By the
    time it overflows, many steps have been wasted.

    ## Known problems
    Only positive losses are followed. Noisy losses (reinforcement learning, small batches) and
    curricula that make the task harder on purpose can rise legitimately. A loss near zero
    doubles on noise alone (one batch of a few at 0.12 after a best of 0.06): `patience` asks
    the rise to last, as a divergence does. A loss that converged to rounding noise (a student
    that matches its teacher: 2e-15, then 7e-15) rises by large factors on nothing: a rise of
    less than 1e-12, or than a millionth of the first running median, is not followed.

    ## References
    - https://arxiv.org/abs/1506.01186
    """

    code = "TA710"
    name = "loss-diverging"
    severity = Severity.WARNING
    status = "preview"
    message = "the loss rose to {current:.4g} (median of the last {window} steps), {ratio:.1f}x its best {best:.4g}"
    fix_title = "Lower the learning rate or add warm-up and gradient clipping"
    events = frozenset({"backward", "step_pre"})
    options = {
        "factor": Option(2.0, "report when the running loss exceeds this multiple of its best", float),
        "window": Option(5, "steps in the running median", int),
        "patience": Option(3, "consecutive checked steps above factor x best before reporting", int),
    }

    def setup(self) -> None:
        from collections import deque

        # this step's losses (several with gradient accumulation); bounded for a loop that
        # calls backward() without ever stepping an optimizer
        self._losses: deque = deque(maxlen=256)
        from collections import deque

        # the last `window` step losses and how many there were: bounded, whatever the run's length
        self._history: deque[float] = deque(maxlen=self.opts["window"])
        self._seen = 0
        self._best = math.inf
        self._streak = 0
        #: the first running median: a rise below a millionth of it is rounding noise
        self._initial: float | None = None

    def close(self) -> None:
        self._losses.clear()

    def on_backward(self, event) -> None:
        if event.value is not None:
            self._losses.append(event.value)

    def on_step_pre(self, ctx) -> None:
        losses = list(self._losses)
        self._losses.clear()
        if not ctx.checked or not losses:
            return
        import torch

        with torch.no_grad():
            mean = torch.stack([v.reshape(()).float().to(losses[0].device) for v in losses]).mean()
        self.defer(mean.reshape(1), lambda values: self._check(ctx.step, values[0]))

    def _check(self, step: int, value: float) -> None:
        if not math.isfinite(value) or value <= 0:
            return
        window = self.opts["window"]
        self._history.append(value)
        self._seen += 1
        if self._seen < window:
            return
        current = statistics.median(self._history)
        if self._initial is None:
            self._initial = current
        noise = max(1e-12, 1e-6 * self._initial)  # a converged loss's rounding, not a rise
        above = (self._seen >= 2 * window and current > self.opts["factor"] * self._best
                 and current - self._best > noise)
        self._streak = self._streak + 1 if above else 0
        if self._streak >= self.opts["patience"]:
            self.report("loss", step=step, value=current, current=current, window=window,
                        ratio=current / self._best, best=self._best)
        self._best = min(self._best, current)
