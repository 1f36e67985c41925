"""Where the user's code froze a parameter: the line that set ``requires_grad`` to False
(``p.requires_grad = False``, ``p.requires_grad_(False)``, ``module.requires_grad_(False)``,
also inside ``for p in backbone.parameters():``), for frozen-param-in-optimizer's related
location next to the optimizer's construction.

Nothing observes the assignment itself (that would need a torch function mode around the whole
script, or a patched ``Tensor``). Instead, while ``optimizer.step()`` runs, the user's frames on
the stack are read: each frame's source is parsed (CPython's ``ast``, cached per file), its
freezing statements are found, and each statement's subject (``backbone``, ``model.fc.weight``)
is looked up in that frame's variables, by attribute and index access on modules only (no call,
no property of the user's objects runs). A statement whose subject holds the frozen parameter,
or is the module that holds it, is the line. Freezing done in a helper that has returned is not
found (its variables are gone): then no related line is given.
"""

from __future__ import annotations

import ast
import functools
import linecache
import sys
from typing import Any, Iterator

import torch

from torch_audit.runtime.source import is_library_path

__all__ = ["freezing_lines"]

#: the iterables of a ``for`` loop whose variable stands for the subject's parameters/modules
_ITERATING = {"parameters", "named_parameters", "modules", "named_modules", "children",
              "named_children", "values"}
_MAX_FRAMES = 12


def freezing_lines(params: list[torch.Tensor], skip: int = 2) -> dict[int, tuple[str, int]]:
    """``id(param)`` → ``(path, line)`` of the statement that froze it, for the parameters of
    ``params`` found so (searched in the user's frames on the current stack)."""
    out: dict[int, tuple[str, int]] = {}
    try:
        frame = sys._getframe(skip)
    except ValueError:  # pragma: no cover - a stack shallower than skip
        return out
    wanted = {id(p): p for p in params}
    seen = 0
    while frame is not None and seen < _MAX_FRAMES and len(out) < len(wanted):
        path = frame.f_code.co_filename
        if not is_library_path(path):
            seen += 1
            for line, subject in _statements_of(frame):
                held = _resolve(subject, frame)
                for pid in _params_held(held, wanted):
                    out.setdefault(pid, (path, line))
        frame = frame.f_back
    return out


def _statements_of(frame: Any) -> Iterator[tuple[int, list]]:
    """The freezing statements of the frame's own code (its function, or the module's top
    level): ``(line, subject path)``."""
    code = frame.f_code
    statements = _freezing_statements(code.co_filename)
    if not statements:
        return
    scope = code.co_firstlineno if code.co_name != "<module>" else 0
    for line, owner_scope, subject in statements:
        if owner_scope == scope:
            yield line, subject


@functools.lru_cache(maxsize=64)
def _freezing_statements(path: str) -> tuple[tuple[int, int, tuple], ...]:
    """``(line, first line of the enclosing function or 0, subject path)`` of every statement of
    ``path`` that sets ``requires_grad`` to False. A subject path is a tuple of steps: a name,
    then attributes (``"attr"``) and constant indexes (``[0]``)."""
    source = "".join(linecache.getlines(path))
    if "requires_grad" not in source:
        return ()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    finder = _Finder()
    finder.visit(tree)
    return tuple(finder.found)


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, int, tuple]] = []
        self.scope = 0
        self.loops: list[dict[str, ast.expr]] = []  # loop variable → the loop's subject

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, loops = self.scope, self.loops
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        self.scope, self.loops = first, []
        self.generic_visit(node)
        self.scope, self.loops = outer, loops

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_For(self, node: ast.For) -> None:
        bound: dict[str, ast.expr] = {}
        subject = _iterated(node.iter)
        if subject is not None:
            for name in _target_names(node.target):
                bound[name] = subject
        self.loops.append(bound)
        self.generic_visit(node)
        self.loops.pop()

    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_false(node.value):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr == "requires_grad":
                    self._add(node.lineno, target.value)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "requires_grad_":
            flag = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "requires_grad"), None)
            if flag is not None and _is_false(flag):
                self._add(node.lineno, func.value)
        self.generic_visit(node)

    def _add(self, line: int, expr: ast.expr) -> None:
        for _ in range(4):  # a loop variable stands for its loop's subject (nested loops too)
            if isinstance(expr, ast.Name):
                bound = next((b[expr.id] for b in reversed(self.loops) if expr.id in b), None)
                if bound is not None:
                    expr = bound
                    continue
            break
        path = _subject_path(expr)
        if path is not None:
            self.found.append((line, self.scope, path))


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _target_names(target: ast.expr) -> list[str]:
    """``p`` of ``for p in``; ``p`` of ``for name, p in`` (the last name of a tuple)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[-1], ast.Name):
        return [target.elts[-1].id]
    return []


def _iterated(node: ast.expr) -> ast.expr | None:
    """``backbone`` of ``backbone.parameters()`` (and of ``named_parameters()``, ``modules()``,
    ...); None for other iterables."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _ITERATING:
        return node.func.value
    return None


def _subject_path(node: ast.expr) -> tuple | None:
    steps: list[Any] = []
    while True:
        if isinstance(node, ast.Name):
            return (node.id, *reversed(steps))
        if isinstance(node, ast.Attribute):
            steps.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, int):
            steps.append([node.slice.value])
            node = node.value
        else:
            return None


def _resolve(path: tuple, frame: Any) -> Any:
    """The object ``path`` names in ``frame``, reached through modules' own tables only (no
    user code runs); None when it cannot be reached so."""
    name, *steps = path
    namespace = frame.f_locals
    obj = namespace[name] if name in namespace else frame.f_globals.get(name)
    for step in steps:
        if not isinstance(obj, torch.nn.Module):
            return None
        if isinstance(step, list):  # model[0] of a Sequential/ModuleList
            children = list(obj._modules.values())
            index = step[0]
            obj = children[index] if -len(children) <= index < len(children) else None
            continue
        found = None
        for table in (obj._parameters, obj._modules, obj._buffers):
            if step in table:
                found = table[step]
                break
        obj = found
    return obj


def _params_held(obj: Any, wanted: dict[int, torch.Tensor]) -> list[int]:
    if isinstance(obj, torch.Tensor):
        return [id(obj)] if id(obj) in wanted else []
    if isinstance(obj, torch.nn.Module):
        return [id(p) for p in obj.parameters() if id(p) in wanted]
    return []
