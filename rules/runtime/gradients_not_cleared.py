from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class GradientsNotCleared(RuntimeCheck):
    """## What it does
    Reports an optimizer whose parameters' gradients keep accumulating across its steps:
    between one `step()` and the next, a backward pass added to gradients that nothing reset
    (no `zero_grad()` of the optimizer or the module, no `p.grad = None`, no in-place
    `p.grad.zero_()`).

    ## Why is this bad?
    Gradients in PyTorch accumulate. Without clearing, step *n* applies the sum of all gradients
    so far: the effective learning rate grows with every step and training diverges or
    oscillates, often slowly enough to look like a bad hyper-parameter.

    ## Known problems
    Intentional accumulation (several backward passes per step, cleared after the step) is
    silent, and so is a GAN whose generator loss flows into the discriminator's gradients as
    long as the discriminator is cleared before its own step. Clearing is recognised at the next
    backward pass (a gradient that became `None`, was replaced, or was modified in place, as
    `zero_grad()` does); a gradient zeroed only after its last backward pass and before the step
    is not recognised as cleared.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.zero_grad.html
    - https://pytorch.org/tutorials/recipes/recipes/zeroing_out_gradients.html
    """

    code = "TA804"
    name = "gradients-not-cleared"
    severity = Severity.ERROR
    message = "gradients of {count} parameter(s) accumulated across {optimizer}.step() calls without being cleared: {params}"
    fix_title = "Call optimizer.zero_grad() once per step (before backward or after step)"
    events = frozenset({"step_pre", "step_post", "backward", "backward_end"})

    def setup(self) -> None:
        # label -> {index: [param, id(grad), grad._version, accumulated]}
        self._watch: dict[str, dict[int, list]] = {}

    def close(self) -> None:
        self._watch = {}

    def on_step_post(self, ctx) -> None:
        watch = {}
        for i, p in enumerate(ctx.params):
            g = p.grad
            if g is not None and not g.is_sparse:
                watch[i] = [p, id(g), g._version, False]
        self._watch[ctx.label] = watch

    def on_backward(self, event) -> None:
        for watch in self._watch.values():
            for i, (p, gid, ver, _) in list(watch.items()):
                g = p.grad
                if g is None or id(g) != gid or g._version != ver:
                    del watch[i]  # cleared (None, replaced, or zeroed in place)

    def on_backward_end(self, event) -> None:
        for watch in self._watch.values():
            for entry in watch.values():
                g = entry[0].grad
                if g is not None and id(g) == entry[1] and g._version != entry[2]:
                    entry[2] = g._version
                    entry[3] = True  # this backward added to an uncleared gradient

    def on_step_pre(self, ctx) -> None:
        watch = self._watch.pop(ctx.label, None)
        if not watch:
            return
        stale = []
        for i, (p, gid, _, accumulated) in watch.items():
            g = p.grad
            if accumulated and g is not None and id(g) == gid:
                stale.append(i)
        if not stale:
            return
        from torch_audit.runtime.util import names_list
        from torch_audit.runtime.source import optimizer_line  # imports torch

        names = [ctx.name(ctx.params[i], i) for i in stale]
        self.report(ctx.label, step=ctx.step, module=self.session.index.owner(ctx.params[stale[0]]),
                    **optimizer_line(self.session, ctx.label),
                    count=len(stale), optimizer=ctx.label, params=names_list(names))
