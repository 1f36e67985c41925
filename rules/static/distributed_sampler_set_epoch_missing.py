import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.api import bool_argument
from torch_audit.lint.facts.index import argument
from torch_audit.lint.facts.names import dotted
from torch_audit.rule import StaticRule

_SAMPLERS = frozenset({"torch.utils.data.DistributedSampler"})
_LOADERS = frozenset({"torch.utils.data.DataLoader"})
_WRAPPERS = frozenset({"enumerate", "tqdm", "iter"})


class DistributedSamplerSetEpochMissing(StaticRule):
    """## What it does
    Finds a shuffling `DistributedSampler` whose DataLoader is iterated in an epoch loop while
    `sampler.set_epoch(epoch)` is never called in the file.

    ## Why is this bad?
    `DistributedSampler` seeds its shuffle with `seed + epoch`. Without `set_epoch`, the epoch
    stays 0 and every epoch visits the samples in exactly the same order on every rank: the
    shuffling the code asked for never happens, which usually costs accuracy and makes runs
    harder to compare with single-GPU training.

    ## Known problems
    The epoch loop must be visible in the function that builds the DataLoader: a `for` over the
    loader nested in another loop, or the loader passed to a call inside a loop
    (`train_one_epoch(model, loader)`). Any `set_epoch` call anywhere in the file silences the
    rule. Samplers built with `shuffle=False` (or a non-literal `shuffle`) are not reported.
    A DataLoader without a `DistributedSampler` in a DDP script (each rank then reads the whole
    dataset) is not detected: data may be sharded in other ways that the code does not show.

    ## References
    - [torch.utils.data.distributed.DistributedSampler](https://pytorch.org/docs/stable/data.html#torch.utils.data.distributed.DistributedSampler)
    """

    code = "TA503"
    name = "distributed-sampler-set-epoch-missing"
    severity = Severity.WARNING
    message = (
        "`{sampler}` is iterated over several epochs (loop at line {line}) but set_epoch() is never called: "
        "every epoch uses the same shuffle order"
    )
    fix_title = "Call `{sampler}.set_epoch(epoch)` at the start of each epoch"

    def leave_Module(self, node: cst.Module) -> None:
        calls = self.ctx.indexer.all_calls
        if any(c.method == "set_epoch" for c in calls):
            return
        samplers = [c for c in calls if c.qualname in _SAMPLERS]
        if not samplers:
            return
        for sampler in samplers:
            shuffle = argument(sampler.node, 2, "shuffle")
            if shuffle is not None and bool_argument(sampler.node, 2, "shuffle") is not True:
                continue
            sampler_name = self._bound_name(sampler.node, sampler.scope)
            for loader in calls:
                if loader.qualname not in _LOADERS or loader.scope is not sampler.scope:
                    continue
                arg = argument(loader.node, 2, "sampler")
                if arg is None:
                    continue
                if not (arg.value is sampler.node or (
                    sampler_name is not None and dotted(arg.value) == sampler_name
                )):
                    continue
                loop = self._epoch_loop(loader)
                if loop is not None:
                    self.report(
                        sampler.node,
                        sampler=sampler_name or "DistributedSampler(...)",
                        line=self.ctx.position(loop.node).start.line,
                    )
                    break

    def _bound_name(self, node: cst.Call, scope) -> str | None:
        """The name a call's result is assigned to (``sampler = DistributedSampler(...)``)."""
        for name, defs in scope.assignments.items():
            for a in defs:
                if a.kind == "assign" and a.value is node:
                    return name
        for name, defs in (scope.class_scope.attributes.items() if scope.class_scope else ()):
            for a in defs:
                if a.kind == "assign" and a.value is node:
                    return f"{scope.params[0]}.{name}" if scope.params else None
        return None

    def _epoch_loop(self, loader):
        scope = loader.scope
        name = self._bound_name(loader.node, scope)
        if name is None:
            return None
        for loop in scope.loops:
            node = loop.node
            if isinstance(node, cst.For) and _iterates(node.iter, name) and loop.parent is not None:
                return loop.parent
        for call in scope.calls:
            loop = call.stmt.loop
            if loop is None or call.stmt.index < loop.stmt.index:
                continue
            if any(dotted(a.value) == name for a in call.node.args) and call.method not in _WRAPPERS:
                # the loader handed to a per-epoch helper inside a loop
                if not isinstance(loop.node, cst.For) or not _iterates(loop.node.iter, name):
                    return loop
        return None


def _iterates(expr: cst.BaseExpression, name: str) -> bool:
    if dotted(expr) == name:
        return True
    if isinstance(expr, cst.Call) and expr.args:
        func = dotted(expr.func) or ""
        if func.rsplit(".", 1)[-1] in _WRAPPERS:
            return _iterates(expr.args[0].value, name)
    return False
