"""Shapes of elementwise math that torch has a more accurate function for.

Used by manual-log1p, manual-expm1 and manual-logsumexp. A call matches a torch function when its
qualified name is one of the listed spellings (``torch.log``, ``torch.special.…``) or when it is
the method of that name called on an expression (``x.log()``); methods are only trusted where
the receiver cannot be a Python number or a NumPy array (neither has ``.log()``/``.exp()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libcst as cst

from torch_audit.lint.facts.index import argument

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

LOG = frozenset({"torch.log", "torch.Tensor.log"})
EXP = frozenset({"torch.exp", "torch.Tensor.exp", "torch.special.exp"})
SUM = frozenset({"torch.sum", "torch.Tensor.sum"})


def is_one(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.Integer):
        return expr.value == "1"
    if isinstance(expr, cst.Float):
        try:
            return float(expr.value) == 1.0
        except ValueError:  # pragma: no cover
            return False
    return False


def torch_call(ctx: "FileContext", node: cst.BaseExpression, names: frozenset[str], method: str,
               scope=None) -> cst.BaseExpression | None:
    """The operand of ``torch.<fn>(x)`` / ``x.<fn>()`` when ``node`` is such a call, else None."""
    if not isinstance(node, cst.Call):
        return None
    q = ctx.qualname(node.func, scope)
    if q in names:
        arg = argument(node, 0, "input")
        return arg.value if arg is not None else None
    if q is None and isinstance(node.func, cst.Attribute) and node.func.attr.value == method:
        if method in ("log", "exp") and node.args:
            return None  # math.log(x, base)-like signatures are not tensor methods
        receiver = node.func.value
        if isinstance(receiver, cst.Name) and ctx.qualname(receiver, scope) is not None:
            return None  # math.log, np.exp: a module, not a tensor
        return receiver
    return None


# -- arguments that cannot be small -------------------------------------------------------------
# log(1 + x) and exp(x) - 1 lose precision only when x is close to 0. Some arguments never are:
# integers (|x| >= 1 or exactly 0, both exact), values clamped away from 0, and sums of a
# constant >= 1 with something non-negative.

#: |x| at least this, or a clamp bound at least this, is not "small"
NOT_SMALL = 0.1

#: functions and methods whose result is integer-valued
INTEGRAL_FUNCTIONS = frozenset(
    {"torch.floor", "torch.ceil", "torch.round", "torch.trunc", "torch.arange", "torch.bincount",
     "torch.randint", "torch.argmax", "torch.argmin", "torch.count_nonzero", "len"}
)
INTEGRAL_METHODS = frozenset(
    {"floor", "ceil", "round", "trunc", "long", "int", "short", "numel", "size", "argmax", "argmin",
     "count_nonzero", "bincount"}
)
#: casts that keep an integer value integral
_VALUE_CASTS = frozenset({"float", "double", "half", "bfloat16", "to", "type", "type_as", "cuda", "cpu"})
_INTEGER_DTYPES = ("long", "int", "int8", "int16", "int32", "int64", "uint8", "short")
#: functions and methods whose result is never negative
NON_NEGATIVE_FUNCTIONS = frozenset(
    {"torch.abs", "torch.exp", "torch.sigmoid", "torch.relu", "torch.sqrt", "torch.square",
     "torch.nn.functional.relu", "torch.nn.functional.softplus", "torch.nn.functional.sigmoid",
     "torch.norm", "torch.linalg.norm", "torch.linalg.vector_norm", "torch.numel", "len"}
)
NON_NEGATIVE_METHODS = frozenset({"abs", "exp", "sigmoid", "relu", "sqrt", "square", "norm", "numel"})


def literal_value(expr: cst.BaseExpression) -> float | None:
    if isinstance(expr, (cst.Integer, cst.Float)):
        try:
            return float(expr.evaluated_value)
        except (ValueError, OverflowError):  # pragma: no cover
            return None
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        inner = literal_value(expr.expression)
        return -inner if inner is not None else None
    return None


def _func_name(ctx: "FileContext", call: cst.Call, scope) -> str | None:
    q = ctx.qualname(call.func, scope)
    if q is None and isinstance(call.func, cst.Name) and (scope or ctx.scope).lookup_scope(call.func.value) is None:
        q = call.func.value  # a builtin (len)
    return q


def _method(ctx: "FileContext", call: cst.Call, scope) -> str | None:
    if isinstance(call.func, cst.Attribute) and ctx.qualname(call.func, scope) is None:
        return call.func.attr.value
    return None


def _follow(ctx: "FileContext", expr: cst.BaseExpression, scope, depth: int) -> cst.BaseExpression | None:
    """The value of a local name assigned once before (``n = x.long()``), else None."""
    if not isinstance(expr, cst.Name) or scope is None or depth > 4:
        return None
    defs = [a for a in scope.assignments.get(expr.value, []) if a.kind != "import"]
    if len(defs) == 1 and defs[0].kind == "assign" and defs[0].value is not None:
        return defs[0].value
    return None


def is_integral(ctx: "FileContext", expr: cst.BaseExpression, scope=None, depth: int = 0) -> bool:
    """Integer-valued by construction: an integer literal, ``torch.floor(...)``,
    ``x.round()``, ``x.long()``, ``len(...)``, ``x.to(torch.long)``, a cast of any of these."""
    if depth > 6:
        return False
    scope = scope or ctx.scope
    if isinstance(expr, cst.Integer):
        return True
    followed = _follow(ctx, expr, scope, depth)
    if followed is not None:
        return is_integral(ctx, followed, scope, depth + 1)
    if isinstance(expr, cst.Subscript) and isinstance(expr.value, cst.Attribute) and expr.value.attr.value == "shape":
        return True
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Add, cst.Subtract, cst.Multiply)):
        return is_integral(ctx, expr.left, scope, depth + 1) and is_integral(ctx, expr.right, scope, depth + 1)
    if not isinstance(expr, cst.Call):
        return False
    if _func_name(ctx, expr, scope) in INTEGRAL_FUNCTIONS:
        return True
    method = _method(ctx, expr, scope)
    if method in INTEGRAL_METHODS:
        return True
    if method in ("to", "type") and expr.args:
        text = ctx.code(expr.args[0].value)
        if text.rsplit(".", 1)[-1] in _INTEGER_DTYPES:
            return True
    if method in _VALUE_CASTS and isinstance(expr.func, cst.Attribute):
        return is_integral(ctx, expr.func.value, scope, depth + 1)
    return False


def _clamp_floor(ctx: "FileContext", call: cst.Call, scope) -> float | None:
    """The lower bound of ``x.clamp(min=c)``, ``torch.clamp(x, c)``, ``x.clamp_min(c)``."""
    q = _func_name(ctx, call, scope)
    method = _method(ctx, call, scope)
    if q in ("torch.clamp", "torch.clip"):
        bound = argument(call, 1, "min")
    elif q == "torch.clamp_min":
        bound = argument(call, 1, "min")
    elif method in ("clamp", "clip"):
        bound = argument(call, 0, "min")
    elif method == "clamp_min":
        bound = argument(call, 0, "min")
    else:
        return None
    return literal_value(bound.value) if bound is not None else None


def is_non_negative(ctx: "FileContext", expr: cst.BaseExpression, scope=None, depth: int = 0) -> bool:
    if depth > 6:
        return False
    scope = scope or ctx.scope
    value = literal_value(expr)
    if value is not None:
        return value >= 0
    followed = _follow(ctx, expr, scope, depth)
    if followed is not None:
        return is_non_negative(ctx, followed, scope, depth + 1)
    if isinstance(expr, cst.BinaryOperation):
        if isinstance(expr.operator, cst.Power):
            exponent = literal_value(expr.right)
            return exponent is not None and exponent % 2 == 0
        if isinstance(expr.operator, (cst.Add, cst.Multiply, cst.Divide)):
            return is_non_negative(ctx, expr.left, scope, depth + 1) and is_non_negative(ctx, expr.right, scope, depth + 1)
        return False
    if not isinstance(expr, cst.Call):
        return False
    if _func_name(ctx, expr, scope) in NON_NEGATIVE_FUNCTIONS or _method(ctx, expr, scope) in NON_NEGATIVE_METHODS:
        return True
    floor = _clamp_floor(ctx, expr, scope)
    return floor is not None and floor >= 0


def cannot_be_small(ctx: "FileContext", expr: cst.BaseExpression, scope=None, depth: int = 0) -> bool:
    """``x`` in ``log(1 + x)`` / ``exp(x) - 1`` is never close to 0 (other than exactly 0): a
    literal, an integer-valued expression, a value clamped to at least :data:`NOT_SMALL`, or a
    constant >= :data:`NOT_SMALL` plus something non-negative."""
    if depth > 6:
        return False
    scope = scope or ctx.scope
    value = literal_value(expr)
    if value is not None:
        return abs(value) >= NOT_SMALL or value == 0
    if is_integral(ctx, expr, scope):
        return True
    followed = _follow(ctx, expr, scope, depth)
    if followed is not None:
        return cannot_be_small(ctx, followed, scope, depth + 1)
    if isinstance(expr, cst.Call):
        floor = _clamp_floor(ctx, expr, scope)
        if floor is not None and floor >= NOT_SMALL:
            return True
        if _method(ctx, expr, scope) in _VALUE_CASTS and isinstance(expr.func, cst.Attribute):
            return cannot_be_small(ctx, expr.func.value, scope, depth + 1)
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
        for const, other in ((expr.left, expr.right), (expr.right, expr.left)):
            value = literal_value(const)
            if value is not None and value >= NOT_SMALL and is_non_negative(ctx, other, scope, depth + 1):
                return True
    return False
