import re

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import Call, Loop, Scope, argument, bool_argument, dotted
from torch_audit.rule import StaticRule

_SAMPLERS = frozenset({"torch.utils.data.DistributedSampler"})
_LOADERS = frozenset({"torch.utils.data.DataLoader"})
_DDP = frozenset({"torch.nn.parallel.DistributedDataParallel"})
_WRAPPERS = frozenset({"enumerate", "tqdm", "iter"})
#: calls that read a DataLoader without replacing or re-sharding it
_READERS = _WRAPPERS | {"len", "next", "zip", "print", "trange", "isinstance", "hasattr", "getattr", "id"}
#: training events that make a loop over a loader a training loop
_TRAINING = frozenset({"backward", "step"})
#: a file that uses any of these shards its data (or lets a framework do it) in a way the rule
#: does not follow: DistributedSampler and its relatives, `split_dataset_by_node`, dataset shards,
#: iterable datasets, WebDataset
_SHARDING_TEXT = re.compile(
    r"DistributedSampler|DistributedBatchSampler|torch\.utils\.data\.distributed|split_dataset_by_node"
    r"|\.shard\(|IterableDataset|webdataset"
)
#: frameworks that build or wrap the loaders themselves (and add the distributed sampler)
_FRAMEWORKS = (
    "accelerate", "lightning", "pytorch_lightning", "lightning_fabric", "ignite", "deepspeed",
    "horovod", "webdataset", "ray", "composer", "colossalai", "transformers.Trainer",
)
#: a dataset built from anything that mentions these may hold only this rank's part
_RANK_WORDS = re.compile(r"rank|world|replica|shard|node|nproc|gpus|split_dataset", re.IGNORECASE)


class DistributedSamplerSetEpochMissing(StaticRule):
    """## What it does
    Finds a shuffling `DistributedSampler` whose DataLoader is iterated in an epoch loop while
    `sampler.set_epoch(epoch)` is never called in the file, and a shuffling DataLoader with no
    sampler at all that trains a model wrapped in `DistributedDataParallel`.

    ## Why is this bad?
    `DistributedSampler` seeds its shuffle with `seed + epoch`. Without `set_epoch`, the epoch
    stays 0 and every epoch visits the samples in exactly the same order on every rank: the
    shuffling the code asked for never happens, which usually costs accuracy and makes runs
    harder to compare with single-GPU training.

    A `DataLoader(dataset, shuffle=True)` without a sampler does not know about the other
    processes: under `DistributedDataParallel` every rank iterates the whole dataset, so one
    epoch does `world_size` times the work, and the gradients that DDP averages come from the
    same samples seen several times (with the same seed on every rank, from identical batches)
    instead of from `world_size` different ones. Pass
    `sampler=DistributedSampler(dataset)` (and drop `shuffle=True`; the sampler shuffles).

    ## Known problems
    The epoch loop must be visible in the function that builds the DataLoader: a `for` over the
    loader nested in another loop, or the loader passed to a call inside a loop
    (`train_one_epoch(model, loader)`). Any `set_epoch` call anywhere in the file silences the
    rule. Samplers built with `shuffle=False` (or a non-literal `shuffle`) are not reported.

    A DataLoader without a sampler is reported only when the code shows all of it: a literal
    `shuffle=True` and no `sampler`/`batch_sampler`; the loader is the only value its name (or
    `self.` attribute) ever gets; a loop over it calls `backward()` or an optimizer `step()`
    (in the same function, in a method of the same class for `self.<loader>`, or in a helper
    of the file that receives it); and `DistributedDataParallel(...)` is called in the same
    function (or both at module level), the same class, a helper or caller of that function,
    or a sibling helper of the same caller. It stays silent when data may be sharded another way: the file
    mentions (even in a comment) `DistributedSampler`, `torch.utils.data.distributed`,
    `split_dataset_by_node`, `.shard(`, `IterableDataset` or `webdataset`, or calls
    `set_epoch`; it imports a framework that builds or wraps the loaders (Accelerate,
    Lightning, Ignite, DeepSpeed, Horovod, Ray, ...); the loader is handed to any call other
    than a helper of the file or a reader such as `enumerate`/`tqdm`/`len`
    (`accelerator.prepare(loader)`, `make_private(data_loader=loader)`); the dataset is a
    parameter of the function, or its construction mentions a rank, world size, shard or node
    (`Subset(ds, range(rank, n, world_size))`, a local dataset class that reads the rank). Code
    in pytest `test*` functions and `Test*` classes is skipped. A dataset that an imported
    constructor splits by reading the rank itself, with no rank in view, is a false positive.
    Not detected: loaders returned by a builder function, loaders consumed through
    `iter()`/`next()`, and scripts that call
    `init_process_group` but never `DistributedDataParallel` (FSDP, hand-written all-reduce:
    the code does not say that ranks must see different data).

    ## References
    - [torch.utils.data.distributed.DistributedSampler](https://pytorch.org/docs/stable/data.html#torch.utils.data.distributed.DistributedSampler)
    - [Getting started with distributed data parallel](https://pytorch.org/tutorials/intermediate/ddp_tutorial.html)
    - [DistributedDataParallel](https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html)
    """

    code = "TA503"
    name = "distributed-sampler-set-epoch-missing"
    severity = Severity.WARNING
    message = (
        "`{sampler}` is iterated over several epochs (loop at line {line}) but set_epoch() is never called: "
        "every epoch uses the same shuffle order"
    )
    #: the second pattern: a DataLoader with no sampler in a DDP script
    unsharded_message = (
        "`{loader}` has shuffle=True but no sampler while the model is wrapped in DistributedDataParallel "
        "(line {ddp_line}): every rank iterates the whole dataset, so each epoch repeats the data world_size "
        "times; pass sampler=DistributedSampler(dataset) instead"
    )
    fix_title = "Call `{sampler}.set_epoch(epoch)` at the start of each epoch"
    unnamed_fix_title = (
        "Assign the DistributedSampler to a variable and call its `set_epoch(epoch)` at the start "
        "of each epoch"
    )
    unsharded_fix_title = (
        "Pass `sampler=DistributedSampler(dataset)` to `{loader}` instead of `shuffle=True`, "
        "and call the sampler's `set_epoch(epoch)` at the start of each epoch"
    )

    def leave_Module(self, node: cst.Module) -> None:
        calls = self.ctx.indexer.all_calls
        if any(c.method == "set_epoch" for c in calls):
            return
        samplers = [c for c in calls if c.qualname in _SAMPLERS]
        if samplers:
            self._check_set_epoch(calls, samplers)
        else:
            self._check_unsharded_loaders(calls)

    # -- a shuffling DistributedSampler without set_epoch ------------------------------------
    def _check_set_epoch(self, calls: list[Call], samplers: list[Call]) -> None:
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
                        # an unnamed sampler: no `DistributedSampler(...).set_epoch(epoch)` advice
                        help=None if sampler_name else self.unnamed_fix_title,
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

    # -- a shuffling DataLoader without any sampler under DDP --------------------------------
    def _check_unsharded_loaders(self, calls: list[Call]) -> None:
        ddps = [c for c in calls if c.qualname in _DDP and not c.scope.in_pytest_test]
        if not ddps or _SHARDING_TEXT.search(self.ctx.source) or self._uses_framework():
            return
        for loader in calls:
            if loader.qualname not in _LOADERS or loader.scope.in_pytest_test:
                continue
            if not self._unsharded_shuffle(loader):
                continue
            name = self._bound_name(loader.node, loader.scope)
            if name is None or not self._only_definition(loader, name):
                continue
            ddp = next((d for d in ddps if self._related(_function(loader.scope), _function(d.scope))), None)
            if ddp is None:
                continue
            scopes = self._scopes_using(loader.scope, name)
            if any(self._escapes(scope, _local_name(scope, name)) for scope in scopes):
                continue
            if not any(self._trains_over(scope, _local_name(scope, name)) for scope in scopes):
                continue
            self.report(
                loader.node,
                message=self.unsharded_message.format(
                    loader=name, ddp_line=self.ctx.position(ddp.node).start.line
                ),
                help=self.unsharded_fix_title.format(loader=name),
            )

    @staticmethod
    def _only_definition(loader: Call, name: str) -> bool:
        """Is this DataLoader the only value the name ever gets? (``loader = make_ddp_loader(ds)
        if distributed else DataLoader(ds, shuffle=True)`` spelled as an ``if``/``else`` is not
        judged: the loop may run on the other one.)"""
        scope = loader.scope
        if "." in name:
            cls = scope.class_scope
            defs = cls.attributes.get(name.split(".", 1)[1], []) if cls is not None else []
        else:
            defs = scope.assignments.get(name, [])
        return len(defs) == 1

    def _uses_framework(self) -> bool:
        for scope in self.ctx.module_scope.walk():
            for qual in scope.bindings.values():
                if any(qual == f or qual.startswith(f + ".") for f in _FRAMEWORKS):
                    return True
        return False

    def _unsharded_shuffle(self, loader: Call) -> bool:
        """``DataLoader(dataset, shuffle=True)`` with no sampler and a dataset whose construction
        shows no per-rank split. (``**kwargs`` cannot hide a sampler: DataLoader refuses a
        sampler or batch_sampler together with ``shuffle=True``.)"""
        node = loader.node
        if bool_argument(node, 2, "shuffle") is not True:
            return False
        if argument(node, 3, "sampler") is not None or argument(node, 4, "batch_sampler") is not None:
            return False
        dataset = argument(node, 0, "dataset")
        if dataset is None:
            return False
        return not self._maybe_sharded(dataset.value, loader.scope, loader.stmt.index, 0, set())

    def _maybe_sharded(self, expr: cst.BaseExpression, scope: Scope, at: int, depth: int, seen: set) -> bool:
        """Could ``expr`` be a per-rank part of a dataset? Its construction is followed through
        local names and local functions or classes; a mention of a rank, world size, shard or
        node anywhere on the way, or a dataset handed in as a parameter, says it could."""
        if depth > 6:
            return True
        if _RANK_WORDS.search(self.ctx.code(expr)):
            return True
        for name in _names(expr):
            owner, defs = self._definitions(name, scope)
            key = (id(owner), dotted(name))
            if owner is None or key in seen:
                continue
            seen.add(key)
            for a in defs:
                if a.kind == "param":
                    # the dataset itself comes from the caller: it may already be this rank's part
                    if expr is name:
                        return True
                    continue
                if a.kind in ("def", "class"):
                    fn = owner.classes().get(a.name) or owner.functions().get(a.name)
                    if fn is not None and _RANK_WORDS.search(self.ctx.code(fn.node)):
                        return True
                    continue
                if a.value is not None and a.stmt is not None:
                    if self._maybe_sharded(a.value, a.stmt.scope, a.index, depth + 1, seen):
                        return True
        return False

    @staticmethod
    def _definitions(name: cst.Name | cst.Attribute, scope: Scope) -> tuple[Scope | None, list]:
        """Every assignment of a name (in the scope that binds it) or of a ``self.`` attribute
        (in any method of the class)."""
        if isinstance(name, cst.Name):
            owner = scope.lookup_scope(name.value)
            return owner, (owner.assignments.get(name.value, []) if owner is not None else [])
        fn = _function(scope)
        cls = fn.class_scope
        if cls is None or not fn.params or dotted(name.value) != fn.params[0]:
            return None, []
        return cls, cls.attributes.get(name.attr.value, [])

    def _related(self, a: Scope, b: Scope) -> bool:
        """Do two functions (or module level) belong to one piece of code: the same function or
        class, one nested in or calling the other, or both called from one function?"""
        if a is b:
            return True
        if a.class_scope is not None and a.class_scope is b.class_scope:
            return True
        if _encloses(a, b) or _encloses(b, a):
            return True
        training = self.ctx.training
        callers_a = {id(_function(c.scope)) for c in training.callers(a)}
        callers_b = {id(_function(c.scope)) for c in training.callers(b)}
        if id(b) in callers_a or id(a) in callers_b or callers_a & callers_b:
            return True
        return False

    def _scopes_using(self, scope: Scope, name: str) -> list[Scope]:
        """Where the loader can be used: its function, or every method of the class for
        ``self.<loader>``."""
        if "." in name and scope.class_scope is not None:
            return [s for s in scope.class_scope.functions().values() if s.params]
        return [scope]

    def _escapes(self, scope: Scope, name: str | None, depth: int = 0) -> bool:
        """Is the loader handed to a call that may replace or re-shard it
        (``accelerator.prepare(loader)``)? Readers and helpers of this file that do not pass
        it on are fine."""
        if name is None:
            return False
        for call in scope.calls:
            if not any(dotted(a.value) == name for a in call.node.args):
                continue
            last = (dotted(call.node.func) or "").rsplit(".", 1)[-1]
            if last in _READERS:
                continue
            helper = self.ctx.training.helper_of(call)
            if helper is None or depth >= 2:
                return True
            if self._escapes(helper, _parameter_for(helper, call, name), depth + 1):
                return True
        return False

    def _trains_over(self, scope: Scope, name: str | None, depth: int = 0) -> bool:
        """Is the loader iterated by a loop that trains (backward or an optimizer step), here
        or in a helper of this file that receives it?"""
        if name is None:
            return False
        training = self.ctx.training
        for loop in scope.loops:
            if isinstance(loop.node, cst.For) and _iterates(loop.node.iter, name):
                if _trains(training, loop):
                    return True
        if depth >= 2:
            return False
        for call in scope.calls:
            if not any(dotted(a.value) == name for a in call.node.args):
                continue
            helper = training.helper_of(call)
            if helper is not None and self._trains_over(helper, _parameter_for(helper, call, name), depth + 1):
                return True
        return False


def _trains(training, loop: Loop) -> bool:
    return any(e.kind in _TRAINING for e in training.loop_events(loop))


def _local_name(scope: Scope, name: str) -> str | None:
    """``self.loader`` as spelled in a method (its own first parameter)."""
    if "." not in name:
        return name
    attr = name.split(".", 1)[1]
    return f"{scope.params[0]}.{attr}" if scope.params else None


def _parameter_for(helper: Scope, call: Call, name: str) -> str | None:
    """The parameter of ``helper`` that receives the argument ``name`` at ``call``."""
    is_method = helper.class_scope is not None and isinstance(call.node.func, cst.Attribute)
    params = helper.params[1:] if is_method else helper.params
    position = 0
    for a in call.node.args:
        if a.keyword is not None:
            if dotted(a.value) == name:
                return a.keyword.value if a.keyword.value in params else None
            continue
        if a.star:
            return None
        if dotted(a.value) == name:
            return params[position] if position < len(params) else None
        position += 1
    return None


def _function(scope: Scope) -> Scope:
    while scope.kind == "lambda" and scope.parent is not None:
        scope = scope.parent
    return scope


def _encloses(outer: Scope, inner: Scope) -> bool:
    """Is ``inner`` a function nested in the function ``outer``?"""
    if outer.kind != "function":
        return False
    s = inner.parent
    while s is not None:
        if s is outer:
            return True
        s = s.parent
    return False


class _Names(cst.CSTVisitor):
    """The variables an expression reads: plain names and ``self.x`` attributes, not the
    attribute part of ``a.b`` nor keyword names of calls."""

    def __init__(self) -> None:
        self.found: list[cst.Name | cst.Attribute] = []

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        if isinstance(node.value, cst.Name):
            self.found.append(node)
        node.value.visit(self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)
        return False

    def visit_Name(self, node: cst.Name) -> None:
        self.found.append(node)


def _names(expr: cst.BaseExpression) -> list[cst.Name | cst.Attribute]:
    visitor = _Names()
    expr.visit(visitor)
    return visitor.found


def _iterates(expr: cst.BaseExpression, name: str) -> bool:
    if dotted(expr) == name:
        return True
    if isinstance(expr, cst.Call) and expr.args:
        func = dotted(expr.func) or ""
        if func.rsplit(".", 1)[-1] in _WRAPPERS:
            return _iterates(expr.args[0].value, name)
    return False
