from __future__ import annotations

import math

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class NonFiniteGradient(RuntimeCheck):
    """## What it does
    Checks, before `optimizer.step()` applies them, that the gradients of the optimizer's
    parameters are finite, and names the parameters whose gradients are NaN or infinite.

    ## Why is this bad?
    One NaN gradient turns the parameter into NaN at the next step, and from there every output
    of the model. Reported after the step (as some tools do) the damage is already in the
    weights; reported before it, a `fail_fast` session stops with the weights intact.

    ## Known problems
    The check reads one fused `torch._foreach_norm` per step, computed in float32 (a float16
    norm would overflow at 65504); a gradient whose values are finite but whose L2 norm
    overflows float32 (values above about 1e19) is reported as non-finite. With
    mixed precision and a `GradScaler`, steps the scaler skips never reach the optimizer and are
    not reported (that is the scaler's job). On CUDA the flags are read one step late unless
    `fail_fast` or `sync="step"` is set.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html
    - https://pytorch.org/docs/stable/amp.html#gradient-scaling
    """

    code = "TA702"
    name = "nonfinite-gradient"
    severity = Severity.ERROR
    message = "non-finite gradients in {count} parameter(s) before {optimizer}.step(): {params}"
    fix_title = "Find the first non-finite loss or activation; lower the learning rate or clip"
    events = frozenset({"step_pre"})
    uses_grad_norms = True

    def on_step_pre(self, ctx) -> None:
        if not ctx.checked:
            return
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        norms = ctx.grad_norms()
        params, has = ctx.params, ctx.has_grad
        index = self.session.index

        def check(values: list[float]) -> None:
            bad = [i for i, (v, h) in enumerate(zip(values, has)) if h and not math.isfinite(v)]
            if not bad:
                return
            names = [ctx.name(params[i], i) for i in bad]
            owner = index.owner(params[bad[0]])
            self.report(
                ctx.label, step=ctx.step, module=owner, value=values[bad[0]],
                **optimizer_line(self.session, ctx.label),
                count=len(bad), optimizer=ctx.label, params=names_list(names),
            )

        self.defer(norms, check)
