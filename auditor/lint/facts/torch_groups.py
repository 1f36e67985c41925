"""Groups of torch APIs that several rules ask about, and the questions they ask of them.

Names are the canonical qualified names of :func:`torch_audit.lint.facts.names.canonical`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

import libcst as cst

from torch_audit.lint.facts.dataflow import Source
from torch_audit.lint.facts.index import Call, argument

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

SOFTMAX_FUNCTIONS = frozenset(
    {"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax", "torch.Tensor.softmax"}
)
LOG_SOFTMAX_FUNCTIONS = frozenset(
    {"torch.log_softmax", "torch.nn.functional.log_softmax", "torch.special.log_softmax", "torch.Tensor.log_softmax"}
)
SIGMOID_FUNCTIONS = frozenset(
    {"torch.sigmoid", "torch.nn.functional.sigmoid", "torch.special.expit", "torch.Tensor.sigmoid"}
)

#: loss name → (functional names, module class names)
LOSSES = {
    "cross_entropy": ({"torch.nn.functional.cross_entropy"}, {"torch.nn.CrossEntropyLoss"}),
    "bce_with_logits": (
        {"torch.nn.functional.binary_cross_entropy_with_logits"},
        {"torch.nn.BCEWithLogitsLoss"},
    ),
    "bce": ({"torch.nn.functional.binary_cross_entropy"}, {"torch.nn.BCELoss"}),
    "nll": ({"torch.nn.functional.nll_loss"}, {"torch.nn.NLLLoss"}),
}

#: Layers whose behaviour depends on ``train()``/``eval()``.
MODE_DEPENDENT_LAYERS = frozenset(
    {
        "torch.nn.Dropout", "torch.nn.Dropout1d", "torch.nn.Dropout2d", "torch.nn.Dropout3d",
        "torch.nn.AlphaDropout", "torch.nn.FeatureAlphaDropout",
        "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d",
        "torch.nn.LazyBatchNorm1d", "torch.nn.LazyBatchNorm2d", "torch.nn.LazyBatchNorm3d",
        "torch.nn.SyncBatchNorm",
        "torch.nn.TransformerEncoderLayer", "torch.nn.TransformerDecoderLayer",
        "torch.nn.TransformerEncoder", "torch.nn.TransformerDecoder", "torch.nn.Transformer",
    }
)
BATCH_NORMS = frozenset(
    {
        "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d",
        "torch.nn.LazyBatchNorm1d", "torch.nn.LazyBatchNorm2d", "torch.nn.LazyBatchNorm3d",
        "torch.nn.SyncBatchNorm",
    }
)
INSTANCE_NORMS = frozenset(
    {
        "torch.nn.InstanceNorm1d", "torch.nn.InstanceNorm2d", "torch.nn.InstanceNorm3d",
        "torch.nn.LazyInstanceNorm1d", "torch.nn.LazyInstanceNorm2d", "torch.nn.LazyInstanceNorm3d",
    }
)
#: Layers with no train/eval difference (a model made only of these needs no eval()).
MODE_FREE_PREFIXES = (
    "torch.nn.Linear", "torch.nn.Conv", "torch.nn.ConvTranspose", "torch.nn.LazyLinear",
    "torch.nn.LazyConv", "torch.nn.ReLU", "torch.nn.GELU", "torch.nn.SiLU", "torch.nn.Tanh",
    "torch.nn.Sigmoid", "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.LayerNorm",
    "torch.nn.GroupNorm", "torch.nn.RMSNorm", "torch.nn.Embedding", "torch.nn.Identity",
    "torch.nn.Flatten", "torch.nn.Unflatten", "torch.nn.MaxPool", "torch.nn.AvgPool",
    "torch.nn.AdaptiveAvgPool", "torch.nn.AdaptiveMaxPool", "torch.nn.LeakyReLU", "torch.nn.ELU",
    "torch.nn.Softplus", "torch.nn.Mish", "torch.nn.Hardswish", "torch.nn.PReLU",
    "torch.nn.Upsample", "torch.nn.PixelShuffle", "torch.nn.ZeroPad", "torch.nn.ReflectionPad",
    "torch.nn.ReplicationPad", "torch.nn.ConstantPad",
)


def is_softmax(source: Source) -> bool:
    if source.kind == "call":
        if source.qualname in SOFTMAX_FUNCTIONS:
            return True
        return source.qualname is None and source.method == "softmax" and _is_method_call(source.node)
    return source.kind == "module" and source.qualname == "torch.nn.Softmax"


EXP_FUNCTIONS = frozenset({"torch.exp", "torch.Tensor.exp", "torch.special.exp"})


def exp_of_log_softmax(ctx: "FileContext", source: Source) -> Source | None:
    """``torch.exp(log_probs)`` (or ``log_probs.exp()``) where ``log_probs`` is a log_softmax:
    probabilities made by hand. Returns the log_softmax's source."""
    node = source.node
    if source.kind != "call" or not isinstance(node, cst.Call):
        return None
    if source.qualname in EXP_FUNCTIONS:
        arg = argument(node, 0, "input")
        value = arg.value if arg is not None else None
    elif source.qualname is None and source.method == "exp" and isinstance(node.func, cst.Attribute):
        value = node.func.value
    else:
        return None
    call = ctx.call(node)
    if value is None or call is None:
        return None
    for inner in ctx.dataflow.sources(value, call.scope, call.stmt.index):
        if is_log_softmax(inner):
            return inner
    return None


def is_probabilities(ctx: "FileContext", source: Source) -> bool:
    """A softmax, or the exponential of a log_softmax."""
    return is_softmax(source) or exp_of_log_softmax(ctx, source) is not None


def is_log_softmax(source: Source) -> bool:
    if source.kind == "call":
        if source.qualname in LOG_SOFTMAX_FUNCTIONS:
            return True
        return source.qualname is None and source.method == "log_softmax" and _is_method_call(source.node)
    return source.kind == "module" and source.qualname == "torch.nn.LogSoftmax"


def is_sigmoid(source: Source) -> bool:
    if source.kind == "call":
        if source.qualname in SIGMOID_FUNCTIONS:
            return True
        return source.qualname is None and source.method == "sigmoid" and _is_method_call(source.node)
    return source.kind == "module" and source.qualname == "torch.nn.Sigmoid"


def _is_method_call(node: cst.CSTNode | None) -> bool:
    # a source found in another file has no node here; the project reports a method only for
    # `x.softmax(...)`-style calls
    return node is None or (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute))


@dataclasses.dataclass
class LossCall:
    call: Call
    loss: str
    #: the expression passed as the loss's input (predictions)
    input: cst.BaseExpression
    functional: bool
    #: for a module loss, the constructor call (``nn.CrossEntropyLoss(...)``)
    ctor: cst.Call | None


def loss_calls(ctx: "FileContext", *losses: str) -> Iterator[LossCall]:
    """Every call in the file that computes one of ``losses`` (keys of :data:`LOSSES`), with
    the expression of its input: ``F.cross_entropy(x, y)``, ``criterion(x, y)`` where
    ``criterion = nn.CrossEntropyLoss()``, ``self.loss_fn(x, y)``, ``nn.CrossEntropyLoss()(x, y)``."""
    wanted = {name: LOSSES[name] for name in losses}
    df = ctx.dataflow
    for call in ctx.indexer.all_calls:
        node = call.node
        q = call.qualname
        for loss, (functions, classes) in wanted.items():
            if q in functions:
                arg = argument(node, 0, "input")
                if arg is not None:
                    yield LossCall(call, loss, arg.value, True, None)
                break
            ctor: cst.Call | None = None
            if isinstance(node.func, cst.Call):
                if call.scope.qualname(node.func.func) in classes:
                    ctor = node.func
            elif q is None and isinstance(node.func, (cst.Name, cst.Attribute)):
                src = df.constructor_source(node.func, call.scope, call.stmt.index)
                if src is not None and src.qualname in classes and isinstance(src.node, cst.Call):
                    ctor = src.node
            if ctor is not None:
                arg = argument(node, 0, "input")
                if arg is not None:
                    yield LossCall(call, loss, arg.value, False, ctor)
                break


def bool_argument(call: cst.Call, position: int | None, keyword: str) -> bool | None:
    """The literal True/False passed for a parameter, None when absent or not a literal."""
    arg = argument(call, position, keyword)
    if arg is None:
        return None
    v = arg.value
    if isinstance(v, cst.Name) and v.value in ("True", "False"):
        return v.value == "True"
    return None
