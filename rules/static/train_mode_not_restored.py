import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class TrainModeNotRestored(StaticRule):
    """## What it does
    Finds a training loop whose body puts a model in eval mode (`model.eval()`, directly or
    through a validation helper of this file or another module, such as `evaluate(model, ...)`
    imported from `evaluation.py`) and does not put it back with `model.train()`
    before the loop's next training step (`backward()` or `optimizer.step()`), although the
    function does call `model.train()` elsewhere (typically once, before the loop).

    ## Why is this bad?
    After the first validation, every later epoch trains in eval mode: Dropout is off and
    BatchNorm normalises with its running statistics and stops updating them. The model
    overfits or trains worse, and nothing fails.

    ## Known problems
    Helpers are followed two calls deep, and a helper's parameter is matched with the argument
    passed to it. A validation helper that calls `model.train()` itself before returning, and
    `model.train()` at the top of the epoch loop or inside the training helper, count as
    restoring; so does `model.train(flag)` with a flag computed at run time. A model that the
    function never puts in train mode (a teacher, an EMA copy) is not reported.

    ## References
    - [torch.nn.Module.train](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.train)
    - [torch.nn.Module.eval](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval)
    """

    code = "TA303"
    name = "train-mode-not-restored"
    severity = Severity.ERROR
    message = (
        "{eval} switches `{model}` to eval mode in the loop at line {loop}, and it is not switched "
        "back with `{model}.train()` before the next training step ({step}): later iterations "
        "train in eval mode"
    )
    fix_title = "Call `model.train()` at the top of each epoch (or after validating)"

    def leave_Module(self, node: cst.Module) -> None:
        training = self.ctx.training
        for loop in training.loops():
            # a backward under no_grad (a shared forward helper called by validation) is no
            # training step
            events = [
                e
                for e in training.loop_events(loop, depth=2)
                if e.kind not in ("backward", "step") or not training.grad_disabled(e)
            ]
            if not any(e.kind in ("backward", "step") for e in events):
                continue
            everything = training.function_events(loop.scope, depth=2)
            for i, e in enumerate(events):
                subject = e.caller_subject
                if e.kind != "eval" or not subject or not e.at_level(loop):
                    continue
                if not any(t.kind == "train" and t.caller_subject and _related(t.caller_subject, subject) for t in everything):
                    continue  # never trained here: a teacher, an EMA copy, a frozen encoder
                for t in events[i + 1 :] + events[:i]:
                    if t.kind == "train" and (t.caller_subject is None or _related(t.caller_subject, subject)):
                        break
                    if t.kind in ("backward", "step"):
                        self.report(
                            e.site_node,
                            eval=training.describe(e),
                            model=subject,
                            loop=training.line(loop.node),
                            step=training.describe(t),
                            related=training.related_locations(e),
                        )
                        break
                else:
                    continue
                break  # one finding per loop


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")
