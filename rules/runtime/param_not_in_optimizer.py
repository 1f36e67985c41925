from __future__ import annotations

import weakref

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class ParamNotInOptimizer(RuntimeCheck):
    """## What it does
    Reports parameters of the audited models that receive gradients but belong to no optimizer
    used in the session (checked on the first steps and every tenth step; a parameter counts as
    optimized once an optimizer that stepped later in the session, such as a GAN's second, holds
    it, even if that optimizer is gone by the end).

    Layers added and parameters replaced inside the session are seen too: the first steps after
    such a change are checked again. A gradient counts when it was written since the last
    check, so one left over from a model trained earlier in the session does not.

    ## Why is this bad?
    The parameters get gradients (they are part of the computation and cost memory and time)
    but are never updated: a classification head swapped in after the optimizer was built, a
    submodule added later, a parameter created with `torch.nn.Parameter` outside the module the
    optimizer was given. The model trains around a frozen random layer and nothing complains.

    ## Known problems
    Without `model=`, only modules that ran a forward pass inside the session are known.

    ## References
    - https://pytorch.org/docs/stable/optim.html
    - https://discuss.pytorch.org/t/how-to-add-a-new-layer-to-the-optimizer/
    """

    code = "TA802"
    name = "param-not-in-optimizer"
    severity = Severity.ERROR
    message = "{count} parameter(s) of {module} receive gradients but are in no optimizer: {params}"
    fix_title = "Rebuild the optimizer after changing the model, or add_param_group() the new parameters"
    events = frozenset({"step_pre", "finish"})

    #: steps checked from the start, and again after the model changed
    recheck_steps = 3

    def setup(self) -> None:
        from torch.utils.weak import WeakIdKeyDictionary

        self._candidates = WeakIdKeyDictionary()
        #: parameter -> (weak reference to its .grad, that tensor's version) at the last check
        self._grad_seen = WeakIdKeyDictionary()
        self._index_version = self.session.index.version
        self._check_until = self.recheck_steps

    def close(self) -> None:
        self._candidates.clear()
        self._grad_seen.clear()

    def _fresh(self, p) -> bool:
        """Whether ``p.grad`` was written since the last check: a gradient left over from a
        model trained earlier in the session (its optimizer gone) is not one it receives."""
        grad, seen = p.grad, self._grad_seen.get(p)
        self._grad_seen[p] = (weakref.ref(grad), grad._version)
        return seen is None or seen[0]() is not grad or seen[1] != grad._version

    def _optimized(self) -> set[int]:
        ids: set[int] = set()
        for opt in list(self.session.optimizers.keys()):
            for group in opt.param_groups:
                ids.update(id(p) for p in group["params"])
        return ids

    def on_step_pre(self, ctx) -> None:
        version = self.session.index.version
        if version != self._index_version:  # a layer added or a parameter replaced mid-run
            self._index_version = version
            self._check_until = ctx.step + self.recheck_steps
        if ctx.step >= self._check_until and ctx.step % 10:
            return
        optimized = self._optimized()
        for p in list(self._candidates.keys()):
            # an optimizer that stepped since (a GAN's second) has it: judged now, not at the
            # end, when that optimizer may be gone with the function that built it
            if id(p) in optimized:
                del self._candidates[p]
        for p in self.session.index.parameters():
            if p.grad is None:
                continue
            fresh = self._fresh(p)
            if fresh and id(p) not in optimized and p not in self._candidates:
                self._candidates[p] = ctx.step

    def on_finish(self) -> None:
        from torch_audit.runtime.check_helpers import names_list

        optimized = self._optimized()
        index = self.session.index
        by_owner: dict[int, list] = {}
        for p, step in list(self._candidates.items()):
            if id(p) in optimized:
                continue
            owner = index.owner(p)
            by_owner.setdefault(id(owner), []).append((index.param_name(p), owner, step))
        for items in by_owner.values():
            owner = items[0][1]
            name = index.name(owner) if owner is not None else "<unknown module>"
            self.report(name, step=min(s for _, _, s in items), module=owner,
                        message=self.message.format(
                            count=len(items), module=name,
                            params=names_list([n for n, _, _ in items])))
        self._candidates.clear()
