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

    The finding points at the line that built the optimizer, and names as a related location
    the line that froze the parameters (`p.requires_grad = False`, `p.requires_grad_(False)`,
    `module.requires_grad_(False)`) when it runs in a function still on the stack at the
    optimizer's step (the training script, `main()`).

    ## Known problems
    Progressive unfreezing is silent only when the parameters are unfrozen before the session
    ends. Build the optimizer over `filter(lambda p: p.requires_grad, ...)` to be explicit.
    Freezing done in a helper function that has returned is not located.

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
        #: label -> {index: (path, line) of the statement that froze the parameter}
        self._froze_at: dict[str, dict[int, tuple[str, int]]] = {}

    def on_step_pre(self, ctx) -> None:
        frozen = self._frozen.setdefault(ctx.label, {})
        new = []
        for i, p in enumerate(ctx.params):
            key = (ctx.label, i)
            if key in self._thawed:
                continue
            if p.requires_grad:
                self._thawed.add(key)
                frozen.pop(i, None)
            elif i not in frozen:
                frozen[i] = (ctx.name(p, i), self.session.index.owner(p), ctx.step)
                new.append((i, p))
        if new:  # the user's frames are on the stack now: where were these frozen?
            from torch_audit.runtime.check_helpers import freezing_lines

            found = freezing_lines([p for _, p in new])
            sites = self._froze_at.setdefault(ctx.label, {})
            for i, p in new:
                if id(p) in found:
                    sites[i] = found[id(p)]

    def on_finish(self) -> None:
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        for label, frozen in self._frozen.items():
            if not frozen:
                continue
            items = [frozen[i] for i in sorted(frozen)]
            sites = self._froze_at.get(label, {})
            lines = sorted({sites[i] for i in frozen if i in sites})
            related = tuple((path, line, "requires_grad set to False here") for path, line in lines[:3])
            self.report(label, step=min(s for _, _, s in items), module=items[0][1],
                        **optimizer_line(self.session, label, "construction"),
                        count=len(items), optimizer=label,
                        params=names_list([n for n, _, _ in items]), related=related)
        self._frozen = {}
        self._froze_at = {}
