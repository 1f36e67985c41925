import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import Event
from torch_audit.rule import StaticRule


class MissingZeroGrad(StaticRule):
    """## What it does
    Finds a loop that calls `backward()` and an optimizer's `step()` in every iteration but never
    clears the gradients inside the loop: no `optimizer.zero_grad()`, `model.zero_grad()`,
    `p.grad = None` or `p.grad.zero_()`, directly or through helper functions (of this file or,
    through the project's summaries, of other modules).
    A `zero_grad()` that runs once before the loop does not count.

    ## Why is this bad?
    `backward()` adds to `.grad`; it does not overwrite it. Without clearing, every step applies
    the sum of all gradients computed so far, so the effective learning rate grows with each
    iteration and old batches keep pushing the weights. Training diverges or converges to a worse
    model, with no error.

    ## Known problems
    Helpers are followed two calls deep for `backward()` and `step()`, four for the clearing
    (helpers of other modules as far as the project's summaries say). Gradient accumulation that
    clears after a conditional step is, correctly, not reported: any clearing inside the loop
    silences the rule. Loops whose optimizer is created inside the loop, and steps with a
    closure (`optimizer.step(closure)`, as LBFGS needs), are skipped.

    ## References
    - [torch.optim: taking an optimization step](https://pytorch.org/docs/stable/optim.html#taking-an-optimization-step)
    - [Zeroing out gradients in PyTorch](https://pytorch.org/tutorials/recipes/recipes/zeroing_out_gradients.html)
    """

    code = "TA304"
    name = "missing-zero-grad"
    severity = Severity.ERROR
    message = (
        "{step} and {backward} run in every iteration of the loop at line {loop}, but gradients are "
        "never cleared inside it{before}: each step applies the sum of all gradients so far"
    )
    fix_title = "Call `optimizer.zero_grad()` once per iteration (before `backward()` or after `step()`)"

    def leave_Module(self, node: cst.Module) -> None:
        training = self.ctx.training
        for loop in training.loops():
            # look deeper for a clearing than for the backward and the step: silence beats a guess
            if any(e.kind == "zero_grad" for e in training.loop_events(loop, depth=4)):
                continue
            events = training.loop_events(loop, depth=2)
            level = [e for e in events if e.at_level(loop)]
            backwards = [e for e in level if e.kind == "backward"]
            steps = [e for e in level if e.kind == "step" and not _has_closure(e)]
            if not backwards or not steps:
                continue
            step = steps[0]
            if self._created_in_loop(step, loop):
                continue
            text = self.ctx.code(loop.node)
            if "zero_grad" in text or ".grad =" in text or "set_to_none" in text:
                continue  # cleared somewhere we do not follow (a closure, a lambda)
            before = ""
            outside = [
                e
                for e in training.function_events(loop.scope, depth=2)
                if e.kind == "zero_grad" and not e.inside(loop) and e.index < loop.stmt.index
            ]
            if outside:
                before = f" ({training.describe(outside[-1])} runs only once, before the loop)"
            self.report(
                step.site_node,
                step=training.describe(step),
                backward=training.describe(backwards[0]),
                loop=training.line(loop.node),
                before=before,
            )

    def _created_in_loop(self, step: Event, loop) -> bool:
        """An optimizer built inside the loop (a fresh model per trial) starts from clean grads."""
        name = step.optimizer if step.via is None else None
        if not name or "." in name:
            return False
        scope = loop.scope
        return any(
            a.stmt is not None and a.stmt.inside(loop) for a in scope.assignments.get(name, [])
        )


def _has_closure(event: Event) -> bool:
    call = event.call
    if call is None:
        return False
    if call.arg(None, "closure") is not None:
        return True
    subject = event.subject or ""
    # scaler.step(optimizer) / xm.optimizer_step(optimizer) pass the optimizer, not a closure
    if event.optimizer != event.subject:
        return False
    return bool(call.node.args) and not subject.endswith("scaler")
