import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import BATCH_NORMS, INSTANCE_NORMS, argument, bool_argument, fixes
from torch_audit.rule import StaticRule

#: layer → position of its ``bias`` parameter
BIASED_LAYERS = {
    "torch.nn.Linear": 2,
    "torch.nn.Conv1d": 7,
    "torch.nn.Conv2d": 7,
    "torch.nn.Conv3d": 7,
    "torch.nn.ConvTranspose1d": 7,
    "torch.nn.ConvTranspose2d": 7,
    "torch.nn.ConvTranspose3d": 7,
    "torch.nn.LazyLinear": 1,
    "torch.nn.LazyConv1d": 6,
    "torch.nn.LazyConv2d": 6,
    "torch.nn.LazyConv3d": 6,
}


def _has_bias(call: cst.Call, qualname: str) -> bool:
    """True when the layer certainly has a bias (the default, or bias=True)."""
    if any(a.star for a in call.args):
        return False  # **kwargs could say bias=False
    value = bool_argument(call, BIASED_LAYERS[qualname], "bias")
    if value is not None:
        return value
    return argument(call, BIASED_LAYERS[qualname], "bias") is None


def _is_affine_norm(call: cst.Call, qualname: str | None) -> bool:
    if qualname in BATCH_NORMS:
        return bool_argument(call, 2 if qualname != "torch.nn.SyncBatchNorm" else 2, "affine") is not False
    if qualname in INSTANCE_NORMS:
        return bool_argument(call, 3, "affine") is True
    return False


class BiasBeforeNorm(StaticRule):
    """## What it does
    Finds a `Linear` or convolution layer with a bias (the default) whose output goes straight
    into a BatchNorm (or an InstanceNorm with `affine=True`): adjacent in an `nn.Sequential`, or
    in `forward` (`self.bn(self.conv(x))`, also through variables), also when the layer is built
    by a helper of another module (`self.conv1 = conv3x3(c, c)` with `conv3x3` in `layers.py`
    returning a biased `nn.Conv2d`; reported at the helper call, naming the helper).

    ## Why is this bad?
    The norm subtracts the per-channel mean, which removes any constant the previous layer
    added, and then adds its own learned shift. The bias is dead weight: parameters, memory and
    optimizer state that never change the output, and weight decay on a meaningless value.

    ## Known problems
    `LayerNorm` and `GroupNorm` normalise over other axes, so a bias before them is not
    redundant and is not reported. A layer whose output is also used elsewhere (not only by the
    norm) is not reported, nor a helper-built layer whose `bias` is not a literal the helper or
    its call shows. A helper-built layer gets no fix: its bias is set inside the helper.

    ## Fix safety
    The fix passes `bias=False` to the layer (or turns its `bias=True` into `bias=False`). It is
    unsafe: the layer's `bias` parameter disappears, so the `state_dict` keys change and
    checkpoints saved before the fix no longer load with `strict=True`, and code that reads
    `layer.bias` breaks. The model's outputs in training are unchanged; in `eval()` mode the
    running mean had absorbed the bias, so old statistics must be re-estimated.

    ## References
    - [Ioffe & Szegedy, Batch Normalization (2015), §3.2](https://arxiv.org/abs/1502.03167)
    - [PyTorch performance tuning guide: disable bias before batch norm](https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#disable-bias-for-convolutions-directly-followed-by-a-batch-norm)
    """

    code = "TA201"
    name = "bias-before-norm"
    severity = Severity.WARNING
    message = "`{layer}` has a bias, but its output goes straight into `{norm}`, which cancels it"
    fix_title = "Pass bias=False to the layer"
    fixable = "always"

    def _fix(self, layer: cst.Call) -> Fix | None:
        # (not ctx.call: its lookup table may have been built before the index was complete)
        record = next((c for c in self.ctx.indexer.all_calls if c.node is layer), None)
        position = BIASED_LAYERS.get(record.qualname or "") if record is not None else None
        if position is None:
            return None  # cannot tell where a positional bias would be
        arg = argument(layer, position, "bias")
        if arg is not None:
            edit = fixes.set_argument_value(self.ctx, arg, "False")
        else:
            edit = fixes.add_keyword(self.ctx, layer, "bias", "False")
        if edit is None:
            return None
        return Fix("Pass bias=False", Applicability.UNSAFE, (edit,))

    def leave_Module(self, node: cst.Module) -> None:
        reported: set[int] = set()

        def report(layer: cst.Call, layer_name: str, norm_name: str) -> None:
            if id(layer) not in reported:
                reported.add(id(layer))
                self.report(layer, layer=layer_name, norm=norm_name, fix=self._fix(layer))

        # nn.Sequential(..., nn.Conv2d(...), nn.BatchNorm2d(...), ...)
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.nn.Sequential":
                continue
            layers = [a.value for a in call.node.args if a.keyword is None and not a.star]
            if any(a.star for a in call.node.args):
                continue
            scope = call.scope
            for first, second in zip(layers, layers[1:]):
                if not (isinstance(first, cst.Call) and isinstance(second, cst.Call)):
                    continue
                q1, q2 = scope.qualname(first.func), scope.qualname(second.func)
                if q1 in BIASED_LAYERS and _has_bias(first, q1) and _is_affine_norm(second, q2):
                    report(first, _short(q1), _short(q2))

        # forward: self.bn(self.conv(x)) or h = self.conv(x); h = self.bn(h)
        df = self.ctx.dataflow
        for cls in self.ctx.modules.classes.values():
            forward = cls.forward
            if forward is None:
                continue
            subs = cls.submodules
            uses: dict[str, int] = {}
            for c in forward.calls:
                attr = _self_attr(c.node.func, forward)
                if attr is not None:
                    uses[attr] = uses.get(attr, 0) + 1
            for c in forward.calls:
                attr = _self_attr(c.node.func, forward)
                sub = subs.get(attr) if attr else None
                if sub is None or not _is_affine_norm(sub.ctor, sub.qualname):
                    continue
                arg = argument(c.node, 0, "input")
                if arg is None:
                    continue
                sources = df.sources(arg.value, forward, c.stmt.index)
                if len(sources) != 1 or sources[0].kind != "module":
                    continue
                layer = sources[0].node
                if layer is None or sources[0].remote is not None:
                    self._helper_built(cls, sub, sources[0], arg.value, forward, c, uses)
                    continue
                producer = next((s for s in subs.values() if s.ctor is layer), None)
                if (
                    producer is not None
                    and producer.qualname in BIASED_LAYERS
                    and uses.get(producer.attr, 0) == 1
                    and _used_only_in_forward(cls, producer.attr)
                    and _has_bias(layer, producer.qualname)
                    and _single_use(arg.value, forward, c.stmt.index)
                ):
                    report(layer, f"self.{producer.attr}", f"self.{sub.attr}")


    def _helper_built(self, cls, sub, source, arg, forward, call, uses) -> None:
        """``self.conv1 = conv3x3(c, c)``: a helper (of this file or another) builds the layer.

        Reported at the helper call in ``__init__``, naming the helper and where it is; no fix
        (the bias is set inside the helper, which other layers may share)."""
        obj = source.remote
        if obj is None or getattr(obj, "kind", None) != "torch" or obj.name not in BIASED_LAYERS:
            return
        attr = _applied_attr(arg, forward, call.stmt.index)
        producer = cls.submodules.get(attr) if attr else None
        if (
            producer is None
            or uses.get(producer.attr, 0) != 1
            or not _used_only_in_forward(cls, producer.attr)
            or not _single_use(arg, forward, call.stmt.index)
        ):
            return
        known, value = obj.literal_argument(BIASED_LAYERS[obj.name], "bias", default=True)
        if not known or value is not True:
            return
        layer = f"self.{producer.attr}"
        message = (
            f"`{layer}` has a bias (an nn.{obj.name.rsplit('.', 1)[-1]} built in {source.evidence}), "
            f"but its output goes straight into `self.{sub.attr}`, which cancels it"
        )
        from torch_audit.lint.api import related_locations

        self.report(producer.ctor, message=message, layer=layer, norm=f"self.{sub.attr}",
                    related=related_locations(source))


def _applied_attr(expr: cst.BaseExpression, forward, at: int) -> str | None:
    """The ``self.<attr>`` layer whose output ``expr`` is: ``self.conv(x)``, or a variable
    assigned from it."""
    if isinstance(expr, cst.Name):
        defining = forward.reaching(expr.value, at)
        if defining is None or defining.kind != "assign":
            return None
        expr = defining.value
    if isinstance(expr, cst.Call):
        return _self_attr(expr.func, forward)
    return None


def _self_attr(func: cst.BaseExpression, scope) -> str | None:
    if (
        isinstance(func, cst.Attribute)
        and isinstance(func.value, cst.Name)
        and scope.params
        and func.value.value == scope.params[0]
    ):
        return func.attr.value
    return None


def _used_only_in_forward(cls, attr: str) -> bool:
    """The layer is not also applied in another method (where no norm may follow it)."""
    for method in cls.scope.children:
        if method.kind != "function" or method.name in ("forward", "__init__"):
            continue
        for c in method.calls:
            if _self_attr(c.node.func, method) == attr:
                return False
    return True


def _single_use(expr: cst.BaseExpression, forward, at: int) -> bool:
    """The layer's output reaches the norm and nothing else: it is passed directly, or held in
    a variable that is read only by the norm before it is reassigned."""
    if not isinstance(expr, cst.Name):
        return isinstance(expr, cst.Call)
    name = expr.value
    defining = forward.reaching(name, at)
    if defining is None:
        return False
    later = [a.index for a in forward.assignments.get(name, []) if a.index > defining.index]
    end = min(later) if later else None
    loads = 0
    for stmt in forward.statements:
        if stmt.index <= defining.index or (end is not None and stmt.index > end):
            continue
        loads += _count_loads(stmt.node, name)
    return loads == 1


def _count_loads(node: cst.CSTNode, name: str) -> int:
    """Reads of ``name`` in a statement (for a compound statement, in its header only)."""
    from torch_audit.lint.api import children

    if isinstance(node, cst.BaseCompoundStatement):
        roots = [c for c in children(node) if not isinstance(c, (cst.BaseSuite, cst.Else, cst.ExceptHandler, cst.Finally))]
    else:
        roots = [node]
    count = 0
    todo = list(roots)
    while todo:
        n = todo.pop()
        if isinstance(n, cst.Name) and n.value == name:
            count += 1
        elif isinstance(n, cst.AssignTarget):
            continue
        elif isinstance(n, cst.Attribute):
            todo.append(n.value)  # `x.attr`: only the object is a read of a name
        else:
            todo.extend(children(n))
    return count


def _short(qualname: str) -> str:
    return "nn." + qualname.rsplit(".", 1)[-1]
