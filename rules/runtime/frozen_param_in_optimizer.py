from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class FrozenParamInOptimizer(RuntimeCheck):
    """## What it does
    Reports parameters with `requires_grad=False` that sit in an optimizer's parameter groups
    for the whole session.

    ## Why is this bad?
    It usually means the freezing and the optimizer disagree: the optimizer was built before the
    layers were frozen (or the other way round), so the user's idea of what trains is not what
    trains. Optimizers with weight decay or momentum keep state for these parameters, and
    unfreezing them later resumes from stale state.

    ## Known problems
    Progressive unfreezing is silent only when the parameters are unfrozen before the session
    ends. Build the optimizer over `filter(lambda p: p.requires_grad, ...)` to be explicit.

    ## References
    - https://pytorch.org/docs/stable/optim.html#per-parameter-options
    - https://pytorch.org/tutorials/beginner/finetuning_torchvision_models_tutorial.html
    """

    code = "TA801"
    name = "frozen-param-in-optimizer"
    severity = Severity.WARNING
    message = "{count} parameter(s) with requires_grad=False are in {optimizer}'s param groups: {params}"
    fix_title = "Build the optimizer from the trainable parameters only"
    events = frozenset({"step_pre", "finish"})

    def setup(self) -> None:
        self._frozen: dict[str, dict[int, tuple]] = {}
        self._thawed: set[tuple[str, int]] = set()

    def on_step_pre(self, ctx) -> None:
        frozen = self._frozen.setdefault(ctx.label, {})
        for i, p in enumerate(ctx.params):
            key = (ctx.label, i)
            if key in self._thawed:
                continue
            if p.requires_grad:
                self._thawed.add(key)
                frozen.pop(i, None)
            elif i not in frozen:
                frozen[i] = (ctx.name(p, i), self.session.index.owner(p), ctx.step)

    def on_finish(self) -> None:
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        for label, frozen in self._frozen.items():
            if not frozen:
                continue
            items = [frozen[i] for i in sorted(frozen)]
            self.report(label, step=min(s for _, _, s in items), module=items[0][1],
                        **optimizer_line(self.session, label, "construction"),
                        count=len(items), optimizer=label,
                        params=names_list([n for n, _, _ in items]))
        self._frozen = {}
