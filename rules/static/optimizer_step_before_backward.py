import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class OptimizerStepBeforeBackward(StaticRule):
    """## What it does
    Finds a loop iteration that calls an optimizer's `step()` before any `backward()` and only
    then computes gradients with `backward()`: the step comes first in the same iteration.
    Events inside helper functions of the same file count where the helper is called.

    ## Why is this bad?
    `step()` uses whatever is in `.grad` at that moment: nothing in the first iteration, the
    previous batch's gradients afterwards, or zeros when `zero_grad()` ran just before it (then
    the model does not learn at all). The gradients of the last batch are never applied.

    ## Known problems
    Steps inside an `if` (an accumulation step at the start of the next iteration) and steps
    with a closure (`optimizer.step(closure)`) are not reported, nor is a step preceded in the
    iteration by any `backward()`, of any loss.

    ## References
    - [torch.optim: taking an optimization step](https://pytorch.org/docs/stable/optim.html#taking-an-optimization-step)
    """

    code = "TA305"
    name = "optimizer-step-before-backward"
    severity = Severity.ERROR
    message = (
        "{step} runs before {backward} in the same iteration of the loop at line {loop}: the step "
        "applies stale gradients (or none) and this iteration's gradients are applied late or never"
    )
    fix_title = "Call `backward()` first, then `optimizer.step()`, then clear the gradients"

    def leave_Module(self, node: cst.Module) -> None:
        training = self.ctx.training
        for loop in training.loops():
            events = training.loop_events(loop)
            for i, e in enumerate(events):
                if e.kind == "backward":
                    break  # a backward precedes every later step
                if e.kind != "step" or not e.at_level(loop) or e.conditional_in(loop):
                    continue
                if e.call is not None and (
                    e.call.arg(None, "closure") is not None or (e.optimizer == e.subject and e.call.node.args)
                ):
                    continue
                later = [b for b in events[i + 1 :] if b.kind == "backward" and b.at_level(loop)]
                if later:
                    self.report(
                        e.site_node,
                        step=training.describe(e),
                        backward=training.describe(later[0]),
                        loop=training.line(loop.node),
                    )
                break
