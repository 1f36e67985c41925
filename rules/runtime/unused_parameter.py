from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class UnusedParameter(RuntimeCheck):
    """## What it does
    Reports trainable parameters (`requires_grad=True`) in an optimizer that never received a
    gradient at any optimizer step of the session.

    ## Why is this bad?
    A parameter that never gets a gradient is not part of the computation the loss sees: a layer
    defined in `__init__` but never called in `forward`, a branch disabled by a config flag, a
    head whose output is dropped, an output detached by mistake. It wastes memory, and under
    DDP it makes `find_unused_parameters` necessary; when it was meant to be used, the model is
    not the one you think.

    ## Known problems
    Parameters used only on some steps (mixture-of-experts routing, auxiliary heads on a
    schedule) are silent as long as they get a gradient once during the session; a short session
    can miss their use and report them.

    ## References
    - https://pytorch.org/docs/stable/notes/ddp.html
    - https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html
    """

    code = "TA803"
    name = "unused-parameter"
    severity = Severity.WARNING
    message = "{count} trainable parameter(s) of {module} in {optimizer} never received a gradient: {params}"
    fix_title = "Remove the unused layer, or find why the loss does not depend on it"
    events = frozenset({"step_pre", "finish"})

    def setup(self) -> None:
        self._got: set[tuple[str, int]] = set()
        self._never: dict[tuple[str, int], tuple] = {}

    def needs_every_pass(self) -> bool:
        # a parameter without a gradient so far is unused only if no pass gives it one
        return bool(self._never)

    def on_step_pre(self, ctx) -> None:
        got, never = self._got, self._never
        for i, (p, h) in enumerate(zip(ctx.params, ctx.has_grad)):
            key = (ctx.label, i)
            if h:
                if key not in got:
                    got.add(key)
                    never.pop(key, None)
            elif key not in got and key not in never and p.requires_grad:
                never[key] = (ctx.name(p, i), self.session.index.owner(p), ctx.step)

    def on_finish(self) -> None:
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        groups: dict[tuple, list] = {}
        for (label, i), (name, owner, step) in sorted(self._never.items(), key=lambda kv: kv[0][1]):
            if (label, i) in self._got:
                continue
            groups.setdefault((label, id(owner)), []).append((name, owner, step, label))
        for items in groups.values():
            owner, label = items[0][1], items[0][3]
            mname = self.session.index.name(owner) if owner is not None else "<unknown module>"
            self.report(f"{label}:{mname}", step=min(s for _, _, s, _ in items), module=owner,
                        **optimizer_line(self.session, label, "construction", module=owner),
                        message=self.message.format(
                            count=len(items), module=mname, optimizer=label,
                            params=names_list([n for n, _, _, _ in items])))
        self._never = {}
