from __future__ import annotations

import math

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class NonFiniteParameter(RuntimeCheck):
    """## What it does
    Checks after every `optimizer.step()` that the optimizer's parameters are finite, and on
    every `state_every`-th step its state tensors (momentum buffers, Adam moments, ...).

    ## Why is this bad?
    A parameter can become NaN or infinite even when loss and gradients are finite: a learning
    rate that overflows the update, an `eps=0` division in an adaptive optimizer, a corrupted
    checkpoint, a manual in-place edit. Once a weight or a moment estimate is non-finite, every
    later step is wasted.

    ## Known problems
    Parameters and state are reduced in float32 (a sum per tensor on CPU, one fused
    `torch._foreach_norm` elsewhere), so finite values that add up past about 3e38 on CPU, or
    above about 1e19 elsewhere, overflow and are reported as non-finite. The flags are read together
    with the next step's, so the finding carries the step that produced the value. The state is
    sampled because it is two to three times the size of the parameters and a non-finite moment
    persists (an exponential average of infinity stays infinite; a NaN stays NaN), while one that
    reaches the parameters is seen at once through them: a state-only problem is reported up to
    `state_every - 1` steps late with the step where it was seen, and not at all when it appears
    in the last steps of a session. `state_every = 1` checks it on every step.

    ## References
    - https://pytorch.org/docs/stable/optim.html
    """

    code = "TA703"
    name = "nonfinite-parameter"
    severity = Severity.ERROR
    message = "{what} non-finite after {optimizer}.step()"
    fix_title = "Lower the learning rate, check eps of adaptive optimizers, clip gradients"
    events = frozenset({"step_post"})
    #: when a run ends in unaudited passes (pass sampling), the parameters are read once more
    sweep_at_end = True
    options = {
        "state_every": Option(10, "check the optimizer state on every N-th step (1: every step)", int),
    }

    def on_step_post(self, ctx) -> None:
        if not ctx.checked:
            return
        import torch

        from torch_audit.runtime.check_helpers import dist
        from torch_audit.runtime.check_helpers import finite_sentinels
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        tensors, labels = [], []
        state = ctx.optimizer.state if ctx.step % max(1, self.opts["state_every"]) == 0 else {}
        # read under no_grad: no detach() per tensor (as costly as the sum itself on small ones)
        for i, p in enumerate(ctx.params):
            if p.is_floating_point() and p.numel():
                tensors.append(dist.local(p))
                labels.append((i, None))
            st = state.get(p) if state else None
            if st:
                for key, v in st.items():
                    if key != "step" and isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel():
                        tensors.append(dist.local(v))
                        labels.append((i, key))
        if not tensors:
            return
        with torch.no_grad():
            stacked = finite_sentinels(tensors)
        params = ctx.params
        index = self.session.index

        def check(values: list[float]) -> None:
            bad = [k for k, v in enumerate(values) if not math.isfinite(v)]
            if not bad:
                return
            parts = []
            for k in bad:
                i, key = labels[k]
                name = ctx.name(params[i], i)
                parts.append(name if key is None else f"optimizer state {key!r} of {name}")
            first = labels[bad[0]][0]
            what = f"{len(bad)} tensor(s): {names_list(parts)} are" if len(bad) > 1 else f"{parts[0]} is"
            self.report(ctx.label, step=ctx.step, module=index.owner(params[first]),
                        **optimizer_line(self.session, ctx.label),
                        value=values[bad[0]], what=what, optimizer=ctx.label)

        self.defer(stacked, check)
