"""Building fixes as minimal text edits, for rules (which see this module as ``fixes`` in
:mod:`torch_audit.lint.api`; applying them is :mod:`torch_audit.lint.autofix`'s).

A fix must keep every comment and all formatting outside the span it edits. ``code_for_node``
of an existing node loses the block indentation of continuation lines and repeats the node's
parentheses (libcst positions exclude them), so these helpers slice the original source
instead and only write the few characters that change.

All helpers return :class:`~torch_audit.findings.Edit` objects (1-based positions, columns in
characters, end exclusive) or ``None`` when a safe minimal edit cannot be built; a rule then
reports without a fix.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

import libcst as cst

from torch_audit.findings import Edit

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

_NEWLINE = re.compile(r"\r\n?|\n")

#: expressions that bind tighter than anything and can stand anywhere without parentheses
_ATOMS = (
    cst.Name,
    cst.Attribute,
    cst.Call,
    cst.Subscript,
    cst.Integer,
    cst.Float,
    cst.Imaginary,
    cst.SimpleString,
    cst.ConcatenatedString,
    cst.FormattedString,
    cst.List,
    cst.Dict,
    cst.Set,
    cst.ListComp,
    cst.DictComp,
    cst.SetComp,
    cst.Ellipsis,
)


def span(ctx: "FileContext", node: cst.CSTNode, *, parens: bool = False) -> tuple[int, int, int, int]:
    """(start line, start column, end line, end column) of ``node``, 1-based, end exclusive.

    libcst positions exclude a node's own parentheses; ``parens=True`` includes them."""
    rng = ctx.position(node)
    start = (rng.start.line, rng.start.column + 1)
    end = (rng.end.line, rng.end.column + 1)
    if parens and getattr(node, "lpar", None):
        lp = ctx.position(node.lpar[0])  # type: ignore[attr-defined]
        rp = ctx.position(node.rpar[-1])  # type: ignore[attr-defined]
        start = (lp.start.line, lp.start.column + 1)
        end = (rp.end.line, rp.end.column + 1)
    return (*start, *end)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in _NEWLINE.finditer(text):
        starts.append(m.end())
    return starts


def _offsets(ctx: "FileContext") -> list[int]:
    cached = getattr(ctx, "_fix_line_starts", None)
    if cached is None:
        cached = _line_starts(ctx.source)
        try:
            ctx._fix_line_starts = cached  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover
            pass
    return cached


def source_of(ctx: "FileContext", node: cst.CSTNode, *, parens: bool = True) -> str:
    """The exact source text of ``node`` (with its own parentheses unless ``parens=False``)."""
    starts = _offsets(ctx)
    sl, sc, el, ec = span(ctx, node, parens=parens)
    return ctx.source[starts[sl - 1] + sc - 1 : starts[el - 1] + ec - 1]


def replace(ctx: "FileContext", node: cst.CSTNode, text: str, *, parens: bool = False) -> Edit:
    """Replace ``node``'s source (its own parentheses too when ``parens``) with ``text``."""
    sl, sc, el, ec = span(ctx, node, parens=parens)
    return Edit(sl, sc, el, ec, text)


def insert(line: int, column: int, text: str) -> Edit:
    return Edit(line, column, line, column, text)


def comments_in(node: cst.CSTNode, keep: Iterable[cst.CSTNode] = ()) -> bool:
    """Whether ``node`` contains a comment outside the subtrees in ``keep``."""
    kept = {id(k) for k in keep}
    todo: list[cst.CSTNode] = [node]
    while todo:
        n = todo.pop()
        if id(n) in kept:
            continue
        if isinstance(n, cst.Comment):
            return True
        todo.extend(n.children)
    return False


def replace_keeping(
    ctx: "FileContext",
    outer: cst.BaseExpression,
    inner: cst.BaseExpression,
    *,
    parent: cst.CSTNode | None = None,
) -> Edit | None:
    """Replace the expression ``outer`` with its sub-expression ``inner`` (``F.softmax(x, 1)``
    → ``x``), adding parentheses where the new place needs them. ``None`` when a comment would
    be lost."""
    if comments_in(outer, keep=[inner]):
        return None
    text = source_of(ctx, inner, parens=True)
    if parent is None:
        parent = ctx.parent_of(outer)
    bracketed = isinstance(parent, (cst.Arg, cst.Element, cst.DictElement)) or bool(
        getattr(outer, "lpar", None)
    )
    atomic = isinstance(inner, _ATOMS) or bool(getattr(inner, "lpar", None))
    safe_place = bracketed or isinstance(parent, (cst.Assign, cst.Return, cst.AnnAssign, cst.Expr))
    multiline = bool(_NEWLINE.search(text))
    if (not atomic and not safe_place) or (multiline and not bracketed and not getattr(inner, "lpar", None)):
        text = f"({text})"
    return replace(ctx, outer, text)


def set_argument_value(ctx: "FileContext", arg: cst.Arg, value: str) -> Edit:
    """Replace the value of an argument (``bias=True`` → ``bias=False``)."""
    return replace(ctx, arg.value, value, parens=True)


def add_keyword(ctx: "FileContext", call: cst.Call, keyword: str, value: str) -> Edit | None:
    """Append ``keyword=value`` to a call's arguments, in the call's own layout:

    - ``f()`` → ``f(keyword=value)``;
    - one argument per line with a trailing comma → a new line with the same indentation;
    - otherwise ``, keyword=value`` right after the last argument (before its comma, if any).
    """
    text = f"{keyword}={value}"
    starts = _offsets(ctx)
    src = ctx.source
    if not call.args:
        _, _, el, ec = span(ctx, call)  # ends just after ")"
        if src[starts[el - 1] + ec - 2] != ")":
            return None
        return insert(el, ec - 1, text)
    last = call.args[-1]
    _, _, al, ac = span(ctx, last)
    comma = last.comma
    rpar_line, rpar_col = span(ctx, call)[2:]
    rpar_col -= 1  # the column of ")"
    if isinstance(comma, cst.Comma) and rpar_line > al:
        # `f(\n    a,\n    b,\n)`: add a line before the one holding ")" when it holds only ")"
        line_start = starts[rpar_line - 1]
        before = src[line_start : line_start + rpar_col - 1]
        if before.strip() == "":
            arg_start_line, arg_start_col = span(ctx, last)[:2]
            ls = starts[arg_start_line - 1]
            prefix = src[ls : ls + arg_start_col - 1]
            indent = prefix if prefix.strip() == "" else re.match(r"[ \t]*", prefix).group(0)  # type: ignore[union-attr]
            return insert(rpar_line, 1, f"{indent}{text},{ctx.module.default_newline}")
    return insert(al, ac, f", {text}")


def count_names(node: cst.CSTNode, name: str) -> int:
    """How often the identifier ``name`` occurs in ``node`` (reads, writes, parameters,
    attribute names excluded), nested scopes included: a conservative count for "this value
    is used exactly once"."""
    count = 0
    todo: list[cst.CSTNode] = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, cst.Name):
            count += n.value == name
        elif isinstance(n, cst.Attribute):
            todo.append(n.value)  # `x.name` is not a use of `name`
        elif isinstance(n, cst.Arg):
            todo.append(n.value)  # `f(name=...)` is a keyword, not a use
        else:
            todo.extend(n.children)
    return count


def only_value_of_single_assignment(
    ctx: "FileContext", scope, value: cst.BaseExpression, name: str
) -> bool:
    """``name = value`` is the one assignment of ``name`` in ``scope`` (a function), with a
    single target, and ``name`` is read exactly once anywhere in the function."""
    if getattr(scope, "kind", None) != "function":
        return False
    assigns = scope.assignments.get(name, [])
    if len(assigns) != 1 or assigns[0].kind != "assign" or assigns[0].value is not value:
        return False
    parent = ctx.parent_of(value)
    if not (
        isinstance(parent, cst.Assign)
        and len(parent.targets) == 1
        and isinstance(parent.targets[0].target, cst.Name)
        and parent.targets[0].target.value == name
    ):
        return False
    return count_names(scope.node, name) == 2


def unwrap(ctx: "FileContext", outer: cst.CSTNode, inner: cst.CSTNode) -> list[Edit] | None:
    """Delete the parts of ``outer`` around ``inner`` (``torch.log(S)`` → ``S``), leaving the
    text of ``inner`` (and its parentheses) untouched, so that other edits may go inside it.
    ``None`` when a comment would be lost."""
    if comments_in(outer, keep=[inner]):
        return None
    osl, osc, oel, oec = span(ctx, outer)
    isl, isc, iel, iec = span(ctx, inner, parens=True)
    edits = []
    if (osl, osc) != (isl, isc):
        edits.append(Edit(osl, osc, isl, isc, ""))
    if (iel, iec) != (oel, oec):
        edits.append(Edit(iel, iec, oel, oec, ""))
    return edits


def drop_activation(ctx: "FileContext", used: cst.BaseExpression, source, scope, functions: frozenset[str], method: str) -> Edit | None:
    """An edit replacing an activation call (``F.softmax(x, 1)``, ``x.sigmoid()``) by its input,
    when the activation and ``used`` (the expression a loss receives) are in the same function
    ``scope`` and the activation's value is used by nothing else: ``used`` is the call itself,
    or a name assigned once from it and read once. ``source`` is the dataflow
    :class:`~torch_audit.lint.facts.dataflow.Source` of the activation."""
    from torch_audit.lint.facts.index import argument

    call = source.node
    if source.kind != "call" or source.scope is not scope or not isinstance(call, cst.Call):
        return None
    if source.qualname in functions and not source.qualname.startswith("torch.Tensor."):
        arg = argument(call, 0, "input")
        if arg is None or arg.star:
            return None
        inner = arg.value
    elif source.qualname is None and source.method == method and isinstance(call.func, cst.Attribute):
        inner = call.func.value  # logits.softmax(dim=1)
    else:
        return None
    if used is not call:
        if not (isinstance(used, cst.Name) and only_value_of_single_assignment(ctx, scope, call, used.value)):
            return None
    return replace_keeping(ctx, call, inner)
