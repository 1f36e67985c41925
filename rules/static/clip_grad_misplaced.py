import re

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import CLIP_FUNCTIONS, Event
from torch_audit.rule import StaticRule

_SCALER = re.compile(r"scaler", re.IGNORECASE)


class ClipGradMisplaced(StaticRule):
    """## What it does
    Finds gradient clipping (`clip_grad_norm_`, `clip_grad_value_`) in the wrong place of a loop
    iteration: after `optimizer.step()` (and before the next `backward()`), before the
    iteration's `backward()`, or, with a `GradScaler` (`scaler.step(optimizer)`), without
    `scaler.unscale_(optimizer)` before it.

    ## Why is this bad?
    Clipping changes `.grad`, so it only has an effect between `backward()` and `step()`. After
    the step the update is already done and the clipped gradients are thrown away; before
    `backward()` it clips stale or zeroed gradients. With a `GradScaler` the gradients are still
    multiplied by the loss scale (often 65536), so a threshold like `max_norm=1.0` clips almost
    everything to a tiny update.

    ## Known problems
    Only the order inside one loop iteration is checked, with helpers of the same file followed
    one call deep; a clipping done in a helper is reported at its own line (the message names the
    call that reaches it), once even when several loops call the helper. `accelerator.clip_grad_norm_` and other framework methods unscale by
    themselves and are not checked for `unscale_`.

    ## References
    - [torch.nn.utils.clip_grad_norm_](https://pytorch.org/docs/stable/generated/torch.nn.utils.clip_grad_norm_.html)
    - [AMP examples: gradient clipping](https://pytorch.org/docs/stable/notes/amp_examples.html#gradient-clipping)
    """

    code = "TA307"
    name = "clip-grad-misplaced"
    severity = Severity.ERROR
    message = "{clip} {problem}"
    fix_title = "Clip between `backward()` and `optimizer.step()` (after `scaler.unscale_(optimizer)` with AMP)"

    def leave_Module(self, node: cst.Module) -> None:
        training = self.ctx.training
        reported: set[int] = set()
        for loop in training.loops():
            events = training.loop_events(loop)
            for i, e in enumerate(events):
                if e.kind != "clip" or not e.at_level(loop):
                    continue
                problem = self._problem(events[:i], events[i + 1 :], e)
                # at the clipping itself, also when a helper does it: that is the line to fix
                # or suppress (the caller may be another function, or another loop too)
                if problem and id(e.node) not in reported:
                    reported.add(id(e.node))
                    self.report(e.node, clip=training.describe(e), problem=problem)

    def _problem(self, before: list[Event], after: list[Event], clip: Event) -> str | None:
        training = self.ctx.training
        last_backward = max((i for i, e in enumerate(before) if e.kind == "backward"), default=None)
        last_step = max((i for i, e in enumerate(before) if e.kind == "step"), default=None)
        later_step = next((e for e in after if e.kind == "step"), None)
        if last_backward is not None and last_step is not None and last_step > last_backward and later_step is None:
            return (
                f"runs after {training.describe(before[last_step])} in the same iteration: the update is "
                "already done, the clipped gradients are discarded"
            )
        if last_backward is None:
            later_backward = next((j for j, e in enumerate(after) if e.kind == "backward"), None)
            if later_backward is not None and any(e.kind == "step" for e in after[later_backward + 1 :]):
                return (
                    f"runs before {training.describe(after[later_backward])} in the same iteration: it "
                    "clips stale gradients, and the step uses unclipped ones"
                )
            return None
        # GradScaler: the gradients are still scaled unless unscale_ ran since the last backward
        if later_step is None or not _is_scaler_step(later_step) or not _is_torch_clip(clip):
            return None
        # the gradients of this step: everything since the previous step (a backward in an
        # `else:` branch may come after the `unscale_` of the `if:` branch)
        window = before[last_step + 1 :] if last_step is not None else before
        if any(e.kind == "unscale" for e in window):
            return None
        return (
            f"clips gradients that are still multiplied by the loss scale ({training.describe(later_step)} "
            "follows): call `scaler.unscale_(optimizer)` before clipping"
        )


def _is_scaler_step(event: Event) -> bool:
    subject = event.subject or ""
    return bool(_SCALER.search(subject.rsplit(".", 1)[-1])) and event.optimizer != event.subject


def _is_torch_clip(event: Event) -> bool:
    call = event.call
    return call is not None and call.qualname in CLIP_FUNCTIONS
