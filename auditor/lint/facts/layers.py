"""Layer-level facts shared by the loss/activation and layer-composition rules.

- which qualified names are ``nn.Module`` layers (and which of those hold no state),
- whether a local class really is an ``nn.Module`` (not an ``nn.Parameter`` subclass),
- ``self.<attr>`` references in the methods of a class,
- the width of a layer's output when the constructor spells it as a literal,
- shape-preserving provenance: the producers of a value reached only through steps that keep the
  tensor's shape (assignments, ``.float()``, ``.to()``, ``.detach()``, ...), not through
  ``view``/``reshape``/``squeeze``/indexing, which can turn a ``(N, T, 1)`` score into ``(N, T)``
  logits.

Nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import libcst as cst

from torch_audit.lint.facts.dataflow import UNKNOWN, Dataflow, Source
from torch_audit.lint.facts.index import Scope, argument
from torch_audit.lint.facts.modules import MODULE_BASES, ModuleClass

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

#: ``torch.nn.<Name>`` objects that are not modules
NOT_MODULES = frozenset(
    {
        "torch.nn.Parameter", "torch.nn.UninitializedParameter", "torch.nn.UninitializedBuffer",
        "torch.nn.Buffer", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer",
        "torch.nn.parameter.UninitializedParameter", "torch.nn.parameter.UninitializedBuffer",
    }
)

#: layers with neither parameters, buffers nor train/eval behaviour: keeping them in a plain list
#: loses nothing
STATELESS_LAYER_PREFIXES = (
    "torch.nn.ReLU", "torch.nn.ReLU6", "torch.nn.GELU", "torch.nn.SiLU", "torch.nn.Tanh",
    "torch.nn.Sigmoid", "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin",
    "torch.nn.Identity", "torch.nn.Flatten", "torch.nn.Unflatten", "torch.nn.MaxPool",
    "torch.nn.AvgPool", "torch.nn.AdaptiveAvgPool", "torch.nn.AdaptiveMaxPool", "torch.nn.LPPool",
    "torch.nn.FractionalMaxPool", "torch.nn.LeakyReLU", "torch.nn.ELU", "torch.nn.CELU",
    "torch.nn.SELU", "torch.nn.Softplus", "torch.nn.Softsign", "torch.nn.Softshrink",
    "torch.nn.Hardshrink", "torch.nn.Tanhshrink", "torch.nn.Mish", "torch.nn.Hardswish",
    "torch.nn.Hardsigmoid", "torch.nn.Hardtanh", "torch.nn.Threshold", "torch.nn.GLU",
    "torch.nn.LogSigmoid", "torch.nn.Upsample", "torch.nn.UpsamplingNearest2d",
    "torch.nn.UpsamplingBilinear2d", "torch.nn.PixelShuffle", "torch.nn.PixelUnshuffle",
    "torch.nn.ZeroPad", "torch.nn.ReflectionPad", "torch.nn.ReplicationPad",
    "torch.nn.ConstantPad", "torch.nn.CircularPad", "torch.nn.ChannelShuffle",
    "torch.nn.Fold", "torch.nn.Unfold", "torch.nn.CosineSimilarity", "torch.nn.PairwiseDistance",
)

#: layers that produce raw scores (logits) from features
LOGIT_LAYERS = frozenset(
    {
        "torch.nn.Linear", "torch.nn.LazyLinear", "torch.nn.Bilinear",
        "torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.Conv3d",
        "torch.nn.LazyConv1d", "torch.nn.LazyConv2d", "torch.nn.LazyConv3d",
    }
)

#: Tensor methods that change neither values nor shape (dtype, device, memory, autograd).
SHAPE_PRESERVING_METHODS = frozenset(
    {"to", "float", "double", "half", "bfloat16", "cuda", "cpu", "contiguous", "clone", "detach",
     "type", "type_as", "requires_grad_"}
)


def is_layer_name(qualname: str | None) -> bool:
    """``torch.nn.Linear``, ``torch.nn.BatchNorm2d``, ... (a class of ``torch.nn``, not a
    function or a parameter)."""
    if not qualname or not qualname.startswith("torch.nn.") or qualname in NOT_MODULES:
        return False
    rest = qualname[len("torch.nn."):]
    if "." in rest:
        return rest.startswith("parallel.") and rest.rsplit(".", 1)[-1][:1].isupper()
    return rest[:1].isupper()


def is_stateless_layer(qualname: str | None) -> bool:
    if not qualname:
        return False
    for prefix in STATELESS_LAYER_PREFIXES:
        if qualname == prefix or (qualname.startswith(prefix) and qualname[len(prefix):] in ("1d", "2d", "3d")):
            return True
    return False


def is_real_module(ctx: "FileContext", cls: ModuleClass, _seen: frozenset[str] = frozenset()) -> bool:
    """True when the class derives from an ``nn.Module`` (``nn.Module``, a torch layer, a known
    framework base, or another local module class), not from ``nn.Parameter`` or the other
    ``torch.nn`` helpers that the module facts also accept."""
    classes = ctx.modules.classes
    scope = cls.scope.parent or cls.scope
    for base in cls.node.bases:
        if base.keyword is not None:
            continue
        q = scope.qualname(base.value)
        if q is not None:
            if q == "torch.nn.Module" or is_layer_name(q) or q in MODULE_BASES:
                return True
            continue
        if isinstance(base.value, cst.Name):
            name = base.value.value
            if name in classes and name not in _seen and name != cls.name:
                if is_real_module(ctx, classes[name], _seen | {cls.name}):
                    return True
    return False


def self_attribute(expr: cst.BaseExpression, scope: Scope) -> str | None:
    """``self.x`` in a method of a class → ``"x"``."""
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
        me = _method_self(scope)
        if me is not None and expr.value.value == me:
            return expr.attr.value
    return None


def _method_self(scope: Scope) -> str | None:
    s: Scope | None = scope
    while s is not None and s.kind == "lambda":
        s = s.parent
    if s is None or s.class_scope is None or not s.params:
        return None
    return s.params[0]


def literal_int(expr: cst.BaseExpression | None) -> int | None:
    if isinstance(expr, cst.Integer):
        return int(expr.value, 0)
    return None


def output_width(ctor: cst.Call, qualname: str) -> int | None:
    """The literal number of output features/channels of a logit layer's constructor."""
    if qualname in ("torch.nn.LazyLinear",):
        arg = argument(ctor, 0, "out_features")
    elif qualname.startswith("torch.nn.LazyConv"):
        arg = argument(ctor, 0, "out_channels")
    elif qualname == "torch.nn.Bilinear":
        arg = argument(ctor, 2, "out_features")
    elif qualname == "torch.nn.Linear":
        arg = argument(ctor, 1, "out_features")
    elif qualname.startswith("torch.nn.Conv"):
        arg = argument(ctor, 1, "out_channels")
    else:
        return None
    return literal_int(arg.value) if arg is not None else None


class ShapePreservingDataflow(Dataflow):
    """Provenance that stops (``unknown``) at every step that may change a tensor's shape:
    ``view``/``reshape``/``squeeze``/``flatten``/``permute``, indexing and slicing. Assignments,
    unpacking of tuples, local helpers, module ``forward`` returns and ``nn.Sequential``'s last
    layer are followed as by :class:`Dataflow`."""

    def _sources(self, expr, scope: Scope, at: int, element, depth: int, seen: set) -> Iterator[Source]:
        if isinstance(expr, cst.Subscript):
            yield UNKNOWN
            return
        yield from super()._sources(expr, scope, at, element, depth, seen)

    def _call_sources(self, expr: cst.Call, scope: Scope, at: int, element, depth: int, seen: set):
        func = expr.func
        if isinstance(func, cst.Attribute):
            call = self.ctx.call(expr)
            qualname = call.qualname if call else scope.qualname(func)
            method = func.attr.value
            if qualname is None and method not in SHAPE_PRESERVING_METHODS and method not in ("forward", "__call__"):
                from torch_audit.lint.facts.dataflow import TRANSPARENT_METHODS

                if method in TRANSPARENT_METHODS:
                    yield UNKNOWN
                    return
        yield from super()._call_sources(expr, scope, at, element, depth, seen)


def shape_preserving_dataflow(ctx: "FileContext") -> ShapePreservingDataflow:
    cached = getattr(ctx, "_ta_shape_dataflow", None)
    if cached is None:
        cached = ShapePreservingDataflow(ctx)
        ctx._ta_shape_dataflow = cached  # type: ignore[attr-defined]
    return cached


def related_locations(source: Source) -> tuple[tuple[str, int, str], ...]:
    """The places beyond the file a source rests on, for SARIF's related locations: where the
    value was produced, and the call site that passed it."""
    from torch_audit.lint.project.model import describe_site

    out = []
    evidence = source.evidence
    if source.node is None and evidence is not None:
        out.append((evidence.path, evidence.line, f"produced here ({evidence.what})"))
    if source.via is not None:
        out.append((source.via.path, source.via.line, f"passed here: {describe_site(source.via)}"))
    return tuple(out)


def describe_source(ctx: "FileContext", source: Source, use_scope: Scope, layer: str) -> str:
    """Where a value was produced, for a message: ``line 12``, ``returned by Net.forward() at
    line 8``, ``the nn.Sigmoid layer built at line 5``; beyond the file, with the file and the
    call site the fact rests on (``returned by Classifier.forward() in pkg/model.py:13``, ``...,
    passed at fit(Net(), loader) in train.py:31``)."""
    from torch_audit.lint.project.model import describe_site

    evidence = source.evidence
    if source.node is None and evidence is not None:
        if source.kind == "module":
            text = f"the {layer} layer built in {evidence}"
        else:
            text = f"returned by {evidence}" if evidence.what != "module level" else f"{evidence.path}:{evidence.line}"
    else:
        line = ctx.position(source.node).start.line if source.node is not None else 0
        if source.kind == "module":
            text = f"the {layer} layer built at line {line}"
        elif source.scope is not None and source.scope is not use_scope and source.scope.kind == "function":
            owner = source.scope.parent
            prefix = f"{owner.name}." if owner is not None and owner.kind == "class" else ""
            text = f"returned by {prefix}{source.scope.name}() at line {line}"
        else:
            text = f"line {line}"
    if source.via is not None:
        text += f", passed at {describe_site(source.via)}"
    return text
