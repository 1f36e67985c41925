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

    Without any `torch.optim` optimizer (a hand-written update such as
    `p.data -= lr * p.grad`), it reports gradients that were not cleared between two
    `backward()` calls while the parameters changed in between: the hand-written update applied
    the sum of all gradients so far, the same bug as a missing `zero_grad()`. The parameters
    are read (their norms) only once gradients were seen uncleared between two `backward()`
    calls, so a loop that clears them pays nothing for this; the bug is reported at the fourth
    `backward()`.

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

    #: consecutive backward() calls over uncleared gradients with the parameters changed in
    #: between, without an optimizer, before the hand-written update is reported
    MANUAL_REPEATS = 2

    def setup(self) -> None:
        # label -> {index: [param, id(grad), grad._version, accumulated]}
        self._watch: dict[str, dict[int, list]] = {}
        self._optimizer_seen = False
        # hand-written updates: the parameters with a gradient after the last backward(), the
        # (id, version) of each gradient then, and the parameters' norms (on the device; None
        # unless the gradients were left uncleared last time, see _manual_record)
        self._manual: tuple[list, list, object] | None = None
        self._manual_suspect = False
        self._manual_streak = 0
        self._manual_done = False
        #: every parameter of the audited models, as of the index's version (-1: not listed)
        self._all_params: list = []
        self._all_version = -1

    def needs_every_pass(self) -> bool:
        # uncleared gradients of a hand-written update are told from accumulation over
        # consecutive backward() calls (until an optimizer steps: then steps tell)
        return (not self._optimizer_seen and not self._manual_done
                and (self._manual_suspect or self._manual_streak > 0))

    def close(self) -> None:
        self._watch = {}
        self._manual = None
        self._all_params = []

    def on_step_post(self, ctx) -> None:
        watch = {}
        for i, p in enumerate(ctx.params):
            g = p.grad
            if g is not None and not g.is_sparse:
                watch[i] = [p, id(g), g._version, False]
        self._watch[ctx.label] = watch

    def on_backward(self, event) -> None:
        if not self._optimizer_seen and not self._manual_done:
            self._manual_backward(event)
        for watch in self._watch.values():
            for i, (p, gid, ver, _) in list(watch.items()):
                g = p.grad
                if g is None or id(g) != gid or g._version != ver:
                    del watch[i]  # cleared (None, replaced, or zeroed in place)

    def on_backward_end(self, event) -> None:
        if not self._optimizer_seen and not self._manual_done:
            self._manual_record()
        for watch in self._watch.values():
            for entry in watch.values():
                g = entry[0].grad
                if g is not None and id(g) == entry[1] and g._version != entry[2]:
                    entry[2] = g._version
                    entry[3] = True  # this backward added to an uncleared gradient

    # -- hand-written updates (no optimizer) ----------------------------------------------------
    def _manual_record(self) -> None:
        """After backward(): which parameters hold a gradient and which gradient, to compare at
        the next backward(); and the parameters' norms, to tell a hand-written update from
        gradient accumulation, only once gradients were found uncleared between two backward()
        calls: a loop that clears them never pays for the norms (the bug is then reported one
        backward() later)."""
        import torch

        index = self.session.index
        if self._all_version != index.version:  # the model's parameters, listed once per change
            self._all_version = index.version
            self._all_params = list(index.parameters())
        params = [p for p in self._all_params
                  if p.requires_grad and p.grad is not None and not p.grad.is_sparse]
        if not params:
            self._manual = None
            return
        grads = [(id(p.grad), p.grad._version) for p in params]
        if not self._manual_suspect:
            self._manual = (params, grads, None)
            return
        with torch.no_grad():
            from torch_audit.runtime.check_helpers import norms

            self._manual = (params, grads, torch.stack(norms([p.detach() for p in params])))

    def _manual_backward(self, event) -> None:
        """Before backward(): gradients kept since the last backward() (not cleared) of
        parameters that changed since (updated by hand)."""
        manual, self._manual = self._manual, None
        if manual is None:
            return
        import torch

        params, grads, before = manual
        kept = [i for i, (p, (gid, ver)) in enumerate(zip(params, grads))
                if p.grad is not None and id(p.grad) == gid and p.grad._version == ver]
        self._manual_suspect = bool(kept)
        if not kept:
            self._manual_streak = 0
            return
        if before is None:
            return  # no norms recorded: the next backward() tells
        from torch_audit.runtime.check_helpers import norms

        with torch.no_grad():
            now = torch.stack(norms([params[i].detach() for i in kept]))
            changed = (now != before[kept]).float()
        names = [self.session.index.param_name(params[i]) for i in kept]
        owner = self.session.index.owner(params[kept[0]])
        site = event.site
        step = self.session.step

        def check(values: list[float]) -> None:
            stale = [n for n, v in zip(names, values) if v > 0.5]
            self._manual_streak = self._manual_streak + 1 if stale else 0
            if self._manual_streak < self.MANUAL_REPEATS or self._manual_done:
                return
            self._manual_done = True
            from torch_audit.runtime.check_helpers import names_list

            path, line = site if site else (None, None)
            self.report("manual-update", step=step, module=owner, path=path, line=line,
                        message=(f"gradients of {len(stale)} parameter(s) accumulated across "
                                 "backward() calls while the parameters were updated by hand "
                                 f"(no optimizer.step()), without being cleared: "
                                 f"{names_list(stale)}"),
                        help="Clear the gradients after each hand-written update "
                             "(p.grad = None or p.grad.zero_(), or model.zero_grad())")

        self.defer(changed, check)

    def on_step_pre(self, ctx) -> None:
        self._optimizer_seen = True
        self._manual = None
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
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        names = [ctx.name(ctx.params[i], i) for i in stale]
        self.report(ctx.label, step=ctx.step, module=self.session.index.owner(ctx.params[stale[0]]),
                    **optimizer_line(self.session, ctx.label),
                    count=len(stale), optimizer=ctx.label, params=names_list(names))
