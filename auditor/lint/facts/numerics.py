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
