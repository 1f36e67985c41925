import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import dotted
from torch_audit.rule import StaticRule


class SchedulerStepBeforeOptimizerStep(StaticRule):
    """## What it does
    Finds a learning-rate scheduler's `step()` that runs, unconditionally, before the first
    optimizer `step()` of the same loop iteration: at the top of the batch loop, or at the top of
    the epoch loop before the batch loop (or the helper) that steps the optimizer.

    ## Why is this bad?
    Since PyTorch 1.1, `scheduler.step()` must follow `optimizer.step()`. Called first, it skips
    the first value of the schedule: the warm-up starts one step (or epoch) late and every later
    learning rate is shifted. PyTorch only warns about it once, at run time.

    ## Known problems
    Only zero-argument `scheduler.step()` calls are checked (`step(epoch)` sets the position
    explicitly, and `ReduceLROnPlateau.step(metric)` and diffusion noise schedulers' `step(...)`
    are different things). A scheduler stepped after the inner loop, once per epoch, is fine and
    not reported; so is a scheduler stepped before the loop, and a scheduler whose position the
    code sets itself (`scheduler.last_epoch = start_epoch - 1`, or `last_epoch=` at
    construction), which makes stepping first a deliberate convention.

    ## References
    - [torch.optim: how to adjust the learning rate](https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate)
    """

    code = "TA306"
    name = "scheduler-step-before-optimizer-step"
    severity = Severity.WARNING
    message = (
        "{scheduler} runs before {step} in the same iteration of the loop at line {loop}: the "
        "first value of the learning-rate schedule is skipped"
    )
    fix_title = "Call `scheduler.step()` after `optimizer.step()`"

    def leave_Module(self, node: cst.Module) -> None:
        training = self.ctx.training
        for loop in training.loops():
            events = training.loop_events(loop)
            for i, e in enumerate(events):
                if e.kind == "step":
                    break
                if (
                    e.kind != "sched_step"
                    or e.call is None
                    or e.call.node.args
                    or not e.at_level(loop)
                    or e.conditional_in(loop)
                ):
                    continue
                later = [s for s in events[i + 1 :] if s.kind == "step"]
                if later and self._position_set_by_hand(e, loop):
                    break
                if later:
                    self.report(
                        e.site_node,
                        scheduler=training.describe(e),
                        step=training.describe(later[0]),
                        loop=training.line(loop.node),
                    )
                break

    def _position_set_by_hand(self, event, loop) -> bool:
        """The code sets the scheduler's position itself (``scheduler.last_epoch = start - 1``,
        or ``last_epoch=`` other than -1 at construction): stepping first is then the
        deliberate convention of the code, not the skipped first value."""
        subject = event.caller_subject or event.subject
        if subject is None:
            return False
        # where the position could be set: the loop's function, or its class for `self.x`
        where = loop.scope
        while where is not None and subject.startswith("self.") and where.kind != "class" and where.parent is not None:
            where = where.parent
        if where is not None and subject in _last_epoch_assignments(where.node):
            return True
        scope = event.call.scope if event.call is not None else None
        if scope is None or event.via is not None:
            return False
        src = self.ctx.dataflow.constructor_source(event.call.receiver, scope, event.call.stmt.index) \
            if event.call.receiver is not None else None
        if src is None or not isinstance(src.node, cst.Call):
            return False
        for arg in src.node.args:
            if arg.keyword is not None and arg.keyword.value == "last_epoch":
                value = arg.value
                is_default = (isinstance(value, cst.UnaryOperation) and isinstance(value.expression, cst.Integer)
                              and value.expression.value == "1")
                return not is_default
        return False


def _last_epoch_assignments(root: cst.CSTNode) -> set[str]:
    """``x`` for every ``x.last_epoch = ...`` under ``root`` (a function, a class)."""
    found: set[str] = set()
    stack: list[cst.CSTNode] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Assign, cst.AugAssign)):
            targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            for t in targets:
                if isinstance(t, cst.Attribute) and t.attr.value == "last_epoch":
                    name = dotted(t.value)
                    if name is not None:
                        found.add(name)
        stack.extend(node.children)
    return found
