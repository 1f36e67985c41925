import libcst as cst

from torch_audit.findings import Severity
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
    not reported; so is a scheduler stepped before the loop.

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
                if later:
                    self.report(
                        e.site_node,
                        scheduler=training.describe(e),
                        step=training.describe(later[0]),
                        loop=training.line(loop.node),
                    )
                break
