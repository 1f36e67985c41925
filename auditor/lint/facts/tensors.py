"""What kind of object a value is: a tensor, an ``nn.Module``, a parameter — when the code says so.

Several rules turn on this judgement: ``x.to(device)`` as a bare statement is a bug for a tensor
and correct for a module; ``p -= lr * p.grad`` matters for a parameter. The answer comes from
provenance only (nothing is imported or executed) and is ``None`` whenever the code does not show
it: rules that ask must stay silent on ``None``.

Evidence used:

- a tensor: a ``torch.*`` tensor factory or op (``torch.zeros``, ``torch.randn_like``,
  ``torch.cat``, ``torch.from_numpy``, ...), ``nn.Parameter``, a function parameter annotated
  ``torch.Tensor``, an element unpacked from a batch of a ``torch.utils.data.DataLoader``
  (``for x, y in loader``, ``for i, (x, y) in enumerate(loader)``), tensor-only methods and
  indexing of a tensor;
- a module: a ``torch.nn`` layer constructor, a ``torchvision.models`` builder, an ``nn.Module``
  subclass of the file, a parameter annotated ``nn.Module``;
- a parameter: an element of ``m.parameters()``, the second element of
  ``m.named_parameters()``, an element of ``group["params"]`` for a group of
  ``optimizer.param_groups``, ``nn.Parameter(...)``, or a parameter annotated ``nn.Parameter``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libcst as cst

from torch_audit.lint.facts.index import Assignment, Scope
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

TENSOR = "tensor"
MODULE = "module"
PARAMETER = "parameter"

#: ``torch.<name>`` functions that always return a tensor.
TENSOR_FUNCTIONS = frozenset(
    {
        "tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full", "eye", "arange",
        "range", "linspace", "logspace", "rand", "randn", "randint", "randperm", "normal",
        "bernoulli", "multinomial", "poisson", "zeros_like", "ones_like", "empty_like",
        "full_like", "rand_like", "randn_like", "randint_like", "cat", "concat", "concatenate",
        "stack", "hstack", "vstack", "dstack", "where", "matmul", "mm", "bmm", "einsum",
        "sigmoid", "tanh", "relu", "exp", "log", "abs", "sqrt", "clamp", "clip", "sum", "mean",
        "softmax", "log_softmax", "flatten", "reshape", "squeeze", "unsqueeze", "transpose",
        "permute", "gather", "index_select", "masked_select", "tril", "triu", "outer", "matrix_exp",
        "complex", "polar", "empty_strided", "tensordot", "cdist", "cumsum", "cumprod", "diag",
        "diag_embed", "roll", "flip", "repeat_interleave", "tile", "lerp", "addmm", "baddbmm",
        "FloatTensor", "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor", "BoolTensor",
        "ByteTensor", "Tensor",
    }
)
#: methods that only tensors have, returning a tensor (used to propagate the judgement)
TENSOR_ONLY_METHODS = frozenset(
    {
        "view", "reshape", "squeeze", "unsqueeze", "permute", "transpose", "flatten", "contiguous",
        "clone", "detach", "expand", "expand_as", "view_as", "reshape_as", "repeat", "narrow",
        "sum", "mean", "abs", "exp", "log", "sqrt", "clamp", "softmax", "log_softmax", "sigmoid",
        "matmul", "mm", "bmm", "t", "pow", "masked_fill", "new_zeros", "new_ones", "new_empty",
        "new_full", "new_tensor",
    }
)
#: methods that return ``self`` on a module and a (new) tensor on a tensor
CONVERSION_METHODS = frozenset(
    {"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "type", "requires_grad_", "xpu", "mps"}
)
MODULE_CONTAINERS = frozenset({"torch.nn.ModuleList", "torch.nn.Sequential", "torch.nn.ModuleDict"})
#: methods that (together) only nn.Module has: evidence that a name holds a module
MODULE_ONLY_METHODS = frozenset(
    {"parameters", "named_parameters", "eval", "state_dict", "load_state_dict", "named_modules",
     "modules", "children", "named_children", "register_forward_hook", "register_forward_pre_hook",
     "buffers", "named_buffers"}
)
MODULE_BUILDER_PREFIXES = ("torchvision.models.", "timm.create_model", "torch.hub.load")
DATALOADERS = frozenset({"torch.utils.data.DataLoader"})
#: wrappers that yield their argument's items: ``tqdm(loader)``
_PASS_THROUGH_ITERATORS = frozenset({"tqdm.tqdm", "tqdm.auto.tqdm", "tqdm.notebook.tqdm", "iter"})
_MAX_DEPTH = 10


class Tensors:
    """Answers "is this value a tensor / a module / a parameter?" from provenance."""

    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx

    # -- public API --------------------------------------------------------------------------
    def kind(self, expr: cst.BaseExpression, scope: Scope, at: int) -> str | None:
        """``tensor``, ``module`` or ``parameter`` (a parameter is also a tensor) when the code
        shows it, else None."""
        return self._kind(expr, scope, at, 0, set())

    def is_tensor(self, expr: cst.BaseExpression, scope: Scope, at: int) -> bool:
        return self.kind(expr, scope, at) in (TENSOR, PARAMETER)

    def is_module(self, expr: cst.BaseExpression, scope: Scope, at: int) -> bool:
        return self.kind(expr, scope, at) == MODULE

    def is_module_container(self, expr: cst.BaseExpression, scope: Scope, at: int) -> bool:
        """``nn.ModuleList``/``nn.Sequential``/``nn.ModuleDict`` (its items are modules)."""
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "values":
            expr = expr.func.value
            if not isinstance(expr, (cst.Name, cst.Attribute)):
                return False
        if not isinstance(expr, (cst.Name, cst.Attribute)):
            return False
        src = self.ctx.dataflow.constructor_source(expr, scope, at)
        return src is not None and src.qualname in MODULE_CONTAINERS

    def used_as_module(self, name: str, scope: Scope) -> bool:
        """The function also calls a method only ``nn.Module`` has on ``name``
        (``model.eval()``, ``model.parameters()``, ``model.state_dict()``, ...)."""
        for call in scope.calls:
            if (
                call.method in MODULE_ONLY_METHODS
                and isinstance(call.receiver, cst.Name)
                and call.receiver.value == name
            ):
                return True
        return False

    # -- implementation ----------------------------------------------------------------------
    def _kind(self, expr, scope: Scope, at: int, depth: int, seen: set) -> str | None:
        if depth > _MAX_DEPTH or expr is None:
            return None
        if isinstance(expr, cst.Name):
            key = (id(scope), expr.value, at)
            if key in seen:
                return None
            seen.add(key)
            a = self.ctx.dataflow.reaching(expr.value, scope, at)
            for _ in range(8):  # x += y keeps what x is
                if a is None or a.kind != "aug":
                    break
                before = self.ctx.dataflow.reaching(expr.value, scope, a.index)
                a = None if before is a else before
            if a is not None and a.kind == "aug":
                return None
            if a is None:
                return None
            owner = scope.lookup_scope(expr.value) or scope
            # a name re-bound in a loop or a branch: every definition must agree
            defs = [d for d in owner.assignments.get(expr.value, []) if d.kind not in ("import", "aug")]
            if len(defs) > 1:
                kinds = {self._from_assignment(d, owner, depth, seen) for d in defs}
                return kinds.pop() if len(kinds) == 1 else None
            return self._from_assignment(a, owner, depth, seen)
        if isinstance(expr, cst.Attribute):
            attr = self.ctx.dataflow._self_attribute(expr, scope)
            if attr is not None:
                cls, name = attr
                defs = cls.attributes.get(name, [])
                if len(defs) == 1 and defs[0].kind == "assign" and defs[0].stmt is not None:
                    d = defs[0]
                    return self._expr_kind(d.value, d.stmt.scope, d.index, depth + 1, seen)
            return None
        return self._expr_kind(expr, scope, at, depth + 1, seen)

    def _from_assignment(self, a: Assignment, scope: Scope, depth: int, seen: set) -> str | None:
        if a.kind == "param":
            return annotation_kind(a.target, scope)
        if a.stmt is None:
            return None
        where = a.stmt.scope
        if a.kind in ("assign", "walrus"):
            return self._expr_kind(a.value, where, a.index, depth + 1, seen)
        if a.kind == "for" and isinstance(a.stmt.node, cst.For) and isinstance(a.target, cst.Name):
            path = target_path(a.stmt.node.target, a.target)
            if path is None:
                return None
            return self.element_kind(a.stmt.node.iter, path, where, a.index, depth + 1, seen)
        return None

    def element_kind(self, iterable, path: tuple[int, ...], scope: Scope, at: int,
                     depth: int = 0, seen: set | None = None) -> str | None:
        """The kind of the part ``path`` (tuple positions) of an item of ``iterable``."""
        seen = seen if seen is not None else set()
        if depth > _MAX_DEPTH:
            return None
        if isinstance(iterable, cst.Call):
            q = self.ctx.qualname(iterable.func, scope)
            func = iterable.func
            if q == "enumerate" or (isinstance(func, cst.Name) and func.value == "enumerate" and q is None
                                    and scope.lookup_scope("enumerate") is None):
                if not path or path[0] != 1 or not iterable.args:
                    return None
                return self.element_kind(iterable.args[0].value, path[1:], scope, at, depth + 1, seen)
            if isinstance(func, cst.Name) and func.value == "zip" and scope.lookup_scope("zip") is None:
                if not path or path[0] >= len(iterable.args) or iterable.args[path[0]].star:
                    return None
                return self.element_kind(iterable.args[path[0]].value, path[1:], scope, at, depth + 1, seen)
            if q in _PASS_THROUGH_ITERATORS or (isinstance(func, cst.Name) and func.value == "tqdm"):
                if not iterable.args:
                    return None
                return self.element_kind(iterable.args[0].value, path, scope, at, depth + 1, seen)
            if isinstance(func, cst.Attribute) and q is None:
                method = func.attr.value
                if method == "parameters" and not path and not iterable.args[1:]:
                    return PARAMETER
                if method == "named_parameters" and path == (1,):
                    return PARAMETER
        if path == () and self.is_module_container(iterable, scope, at):
            return MODULE
        if isinstance(iterable, cst.Subscript) and path == ():
            # for p in group["params"]  where  for group in optimizer.param_groups
            if _string_subscript(iterable) == "params" and isinstance(iterable.value, cst.Name):
                a = self.ctx.dataflow.reaching(iterable.value.value, scope, at)
                if (
                    a is not None and a.kind == "for" and isinstance(a.value, cst.Attribute)
                    and a.value.attr.value == "param_groups" and a.element is None
                ):
                    return PARAMETER
        if path and len(path) >= 1:
            # an unpacked batch of a DataLoader: the default collate gives tensors
            if self._is_dataloader(iterable, scope, at, depth, seen) and len(path) == 1:
                return TENSOR
        return None

    def _is_dataloader(self, expr, scope: Scope, at: int, depth: int, seen: set) -> bool:
        if isinstance(expr, cst.Call):
            return self.ctx.qualname(expr.func, scope) in DATALOADERS
        if isinstance(expr, (cst.Name, cst.Attribute)):
            src = self.ctx.dataflow.constructor_source(expr, scope, at)
            if src is not None and src.qualname in DATALOADERS:
                return True
            if isinstance(expr, cst.Name):
                a = self.ctx.dataflow.reaching(expr.value, scope, at)
                if a is not None and a.kind == "param":
                    owner = scope.lookup_scope(expr.value) or scope
                    return _annotation_name(a.target, owner) in DATALOADERS
        return False

    def _expr_kind(self, expr, scope: Scope, at: int, depth: int, seen: set) -> str | None:
        if depth > _MAX_DEPTH or expr is None:
            return None
        if isinstance(expr, (cst.Name, cst.Attribute)) and not isinstance(expr, cst.Call):
            return self._kind(expr, scope, at, depth + 1, seen)
        if isinstance(expr, cst.Call):
            func = expr.func
            q = self.ctx.qualname(func, scope)
            returned = self.ctx.crossfile.function_sources(expr, scope)
            if returned is not None:
                # a helper of this file or another module: what it returns, when every return agrees
                kinds = {_source_kind(s) for s in returned}
                return kinds.pop() if len(kinds) == 1 else None
            if q is not None:
                if self.ctx.crossfile.is_module_class(q):
                    return MODULE  # an nn.Module subclass of another module of the project
                return _qualname_kind(q)
            if isinstance(func, cst.Name):
                cls = self.ctx.modules.local_class(func.value)
                if cls is not None and scope.lookup_scope(func.value) is not None:
                    return MODULE
                return None
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                inner = self._kind(func.value, scope, at, depth + 1, seen)
                if method in CONVERSION_METHODS:
                    if method in ("to", "type", "cuda", "cpu") or inner != PARAMETER:
                        return TENSOR if inner == PARAMETER else inner
                    return TENSOR
                if method in TENSOR_ONLY_METHODS and inner in (TENSOR, PARAMETER):
                    return TENSOR
            return None
        if isinstance(expr, cst.Subscript):
            if self.is_module_container(expr.value, scope, at):
                return MODULE
            inner = self._kind(expr.value, scope, at, depth + 1, seen)
            return TENSOR if inner in (TENSOR, PARAMETER) else None
        if isinstance(expr, cst.BinaryOperation):
            left = self._kind(expr.left, scope, at, depth + 1, seen)
            right = self._kind(expr.right, scope, at, depth + 1, seen)
            if left in (TENSOR, PARAMETER) or right in (TENSOR, PARAMETER):
                return TENSOR
            return None
        if isinstance(expr, cst.Comparison):
            # `x > 0`, `pred == y`: a comparison with a tensor is a (boolean) tensor
            operands = [expr.left, *(c.comparator for c in expr.comparisons)]
            if any(
                isinstance(c.operator, (cst.Is, cst.IsNot, cst.In, cst.NotIn)) for c in expr.comparisons
            ):
                return None  # `x is None`, `k in d`: a bool
            if any(self._kind(o, scope, at, depth + 1, seen) in (TENSOR, PARAMETER) for o in operands):
                return TENSOR
            return None
        if isinstance(expr, cst.UnaryOperation) and not isinstance(expr.operator, cst.Not):
            inner = self._kind(expr.expression, scope, at, depth + 1, seen)
            return TENSOR if inner in (TENSOR, PARAMETER) else None
        return None


def _source_kind(source) -> str | None:
    """The kind of a value the project found (a call of a torch function or a layer)."""
    from torch_audit.lint.project.model import ARITHMETIC

    if source.kind == "call" and source.qualname == ARITHMETIC:
        # arithmetic or a comparison: a tensor when an operand is one
        return TENSOR if any(_source_kind(o) in (TENSOR, PARAMETER) for o in source.operands) else None
    if source.kind == "call" and source.qualname:
        return _qualname_kind(source.qualname)
    return None


def _qualname_kind(q: str) -> str | None:
    if q in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
        return PARAMETER
    head, _, last = q.rpartition(".")
    if head == "torch" and last in TENSOR_FUNCTIONS:
        return TENSOR
    if head in ("torch.nn", "torch.nn.parallel") and last[:1].isupper() and last not in ("Parameter",):
        return MODULE
    if q.startswith(MODULE_BUILDER_PREFIXES):
        return MODULE
    return None


def target_path(target: cst.BaseExpression, name: cst.Name) -> tuple[int, ...] | None:
    """Where ``name`` sits in a (nested) assignment target: ``i, (x, y)`` → x is (1, 0)."""
    if target is name:
        return ()
    if isinstance(target, (cst.Tuple, cst.List)):
        for i, el in enumerate(target.elements):
            if isinstance(el, cst.StarredElement):
                if el.value is name:
                    return None
                continue
            sub = target_path(el.value, name)
            if sub is not None:
                return (i, *sub)
    return None


def _string_subscript(sub: cst.Subscript) -> str | None:
    if len(sub.slice) != 1 or not isinstance(sub.slice[0].slice, cst.Index):
        return None
    value = sub.slice[0].slice.value
    if isinstance(value, cst.SimpleString):
        v = value.evaluated_value
        return v if isinstance(v, str) else None
    return None


def _annotation_name(param: cst.CSTNode | None, scope: Scope) -> str | None:
    if not isinstance(param, cst.Param) or param.annotation is None:
        return None
    ann = param.annotation.annotation
    if not isinstance(ann, (cst.Name, cst.Attribute)):
        return None
    return (scope.parent or scope).qualname(ann) if scope.kind in ("function", "lambda") else scope.qualname(ann)


def annotation_kind(param: cst.CSTNode | None, scope: Scope) -> str | None:
    """The kind a parameter's annotation promises: ``x: torch.Tensor`` → tensor."""
    if not isinstance(param, cst.Param) or param.annotation is None:
        return None
    ann = param.annotation.annotation
    q = None
    if isinstance(ann, (cst.Name, cst.Attribute)):
        # the annotation is evaluated in the scope that defines the function
        q = (scope.parent or scope).qualname(ann) if scope.kind in ("function", "lambda") else scope.qualname(ann)
    if q is None:
        return None
    if q in ("torch.Tensor", "torch.FloatTensor", "torch.LongTensor"):
        return TENSOR
    if q in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
        return PARAMETER
    if q == "torch.nn.Module":
        return MODULE
    return None


def tensors(ctx: "FileContext") -> Tensors:
    """The per-file :class:`Tensors` facts (built once, shared by the rules that ask)."""
    found = ctx.__dict__.get("_tensor_facts")
    if found is None:
        found = Tensors(ctx)
        ctx.__dict__["_tensor_facts"] = found
    return found
