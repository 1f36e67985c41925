"""A file's summary: what other files of the project may ask about it.

Built from CPython's ``ast`` (which the engine computes anyway, for its syntax check, at a fraction
of libcst's cost), before any rule runs, so that every file's analysis can consult every other
file's summary. A summary is plain JSON data (lists, dicts, strings, numbers), cached by the file's
content hash: it never depends on the file's path or on other files. Names are kept as written;
:mod:`torch_audit.lint.project.model` resolves them across files.

What it records:

- ``imports``: local name → the dotted name it binds (relative imports keep their leading dots);
  ``stars``: the modules of ``from m import *``; ``all``: ``__all__`` when it is a literal list.
- ``defs``: the module's top-level names: functions, classes (bases, ``self.x = ...`` assignments
  of every method, methods) and values (``criterion = nn.CrossEntropyLoss()``).
- per function (the module body too, as ``<module>``): parameters with their literal defaults,
  local assignments, returned values, training events (``zero_grad``/``backward``/``step``/...
  with what they act on and where: loops, branches, grad mode) and calls of other functions, with
  their arguments, so that callers and callees can be linked in both directions.

Values are small lists whose first item is a tag:

``["?"]`` unknown; ``["lit", v]`` a literal; ``["param", name]``; ``["name", "a.b"]`` a global or
imported dotted name; ``["loc", name, line]`` a local variable read at ``line``; ``["self",
attr]``; ``["attr", value, name]``; ``["call", func, args, kwargs, line]``; ``["sub", value,
index]`` a constant subscript; ``["binop", line, operands]`` arithmetic or a comparison (a tensor when an operand is one).
"""

from __future__ import annotations

import ast
from typing import Any

#: bump when the format changes: cached summaries of another format are ignored
FORMAT = 3

Value = list

UNKNOWN: Value = ["?"]
_MAX_VALUE_DEPTH = 12
_MAX_ARGS = 12

_GRAD_OFF = ("no_grad", "inference_mode")
_EVENT_METHODS = {
    "zero_grad": "zero_grad",
    "backward": "backward",
    "manual_backward": "backward",
    "step": "step",
    "eval": "eval",
    "train": "train",
    "clip_grad_norm_": "clip",
    "clip_grad_value_": "clip",
    "unscale_": "unscale",
}


def summary_digest(summary: dict | None) -> str:
    """A short, stable hash of a summary (what dependents' cached findings are keyed by)."""
    import hashlib
    import json

    text = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def summarize(tree: ast.Module) -> dict[str, Any]:
    """The summary of one parsed file."""
    return _Summarizer().module(tree)


def outline(tree: ast.Module) -> dict[str, Any]:
    """What a module defines, without looking inside its functions: enough to resolve a name
    (imports, re-exports, which names are classes, functions or values, class bases and method
    names, parameters). A module that is only imported is outlined first and summarised in full
    only when a question needs a function's body (its returns, events or calls)."""
    return _Summarizer().module(tree, bodies=False)


def definition(tree: ast.Module, name: str) -> dict[str, Any] | None:
    """The full summary of the top-level function or class ``name`` of a module (as in
    :func:`summarize`'s ``defs``), or None."""
    summarizer = _Summarizer()
    for stmt in _flat(tree.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            return summarizer.function(stmt)
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return summarizer.klass(stmt)
    return None


def summarize_source(source: str | bytes) -> dict[str, Any] | None:
    """The summary of a file's source, or None when CPython cannot parse it."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    try:
        return summarize(tree)
    except RecursionError:
        return None


class _Summarizer:
    def __init__(self) -> None:
        self.imports: dict[str, str] = {}
        self.stars: list[str] = []

    # -- the module ---------------------------------------------------------------------------
    def module(self, tree: ast.Module, bodies: bool = True) -> dict[str, Any]:
        self.bodies = bodies
        defs: dict[str, Any] = {}
        all_names: list[str] | None = None
        body = self.function_like("<module>", [], {}, tree.body, kind="module") if bodies else None
        for stmt in _flat(tree.body):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self._import(stmt)
        for stmt in _flat(tree.body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[stmt.name] = self.function(stmt)
            elif isinstance(stmt, ast.ClassDef):
                defs[stmt.name] = self.klass(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        if t.id == "__all__":
                            all_names = _string_list(stmt.value)
                            continue
                        previous = defs.get(t.id)
                        value = self.value(stmt.value, {}, None)
                        if previous is not None:
                            # assigned twice at the top level: which one a user sees is not known
                            defs[t.id] = {"kind": "value", "line": stmt.lineno, "value": UNKNOWN}
                        else:
                            defs[t.id] = {"kind": "value", "line": stmt.lineno, "value": value}
        out = {
            "format": FORMAT,
            "imports": self.imports,
            "stars": self.stars,
            "all": all_names,
            "defs": defs,
            "body": body,
        }
        if not bodies:
            out["outline"] = True
        return out

    def _import(self, stmt: ast.Import | ast.ImportFrom) -> None:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    self.imports[top] = top
            return
        base = "." * stmt.level + (stmt.module or "")
        for alias in stmt.names:
            if alias.name == "*":
                self.stars.append(base)
                continue
            full = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
            self.imports[alias.asname or alias.name] = full

    # -- definitions ----------------------------------------------------------------------------
    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, kind: str = "function") -> dict[str, Any]:
        args = node.args
        params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        defaults: dict[str, Value] = {}
        positional = [*args.posonlyargs, *args.args]
        for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults):
            defaults[a.arg] = _literal(d)
        for a, d in zip(args.kwonlyargs, args.kw_defaults):
            if d is not None:
                defaults[a.arg] = _literal(d)
        decorators = [_dotted(d.func if isinstance(d, ast.Call) else d) or "" for d in node.decorator_list]
        if not getattr(self, "bodies", True):
            summary = {"name": node.name, "params": params, "defaults": defaults, "outline": True}
        else:
            summary = self.function_like(node.name, params, defaults, node.body, kind=kind)
        summary["line"] = node.lineno
        summary["decorators"] = decorators
        if args.vararg is not None:
            summary["varargs"] = True
        return summary

    def klass(self, node: ast.ClassDef) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        attrs: dict[str, list] = {}
        class_values: dict[str, Value] = {}
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fn = self.function(stmt, kind="method")
                methods[stmt.name] = fn
                for attr, entries in fn.pop("self_assign", {}).items():
                    for value, line in entries:
                        attrs.setdefault(attr, []).append([stmt.name, line, value])
            elif isinstance(stmt, ast.Assign):
                for t in stmt.targets:
                    if isinstance(t, ast.Name):
                        class_values[t.id] = self.value(stmt.value, {}, None)
        return {
            "kind": "class",
            "line": node.lineno,
            "bases": [_dotted(b) or "" for b in node.bases],
            "methods": methods,
            "attrs": attrs,
            "class_values": class_values,
        }

    def function_like(self, name: str, params: list[str], defaults: dict, body: list, *, kind: str) -> dict[str, Any]:
        walker = _FunctionWalker(self, params, kind)
        walker.block(body, loops=0, branches=0, grad=None)
        out: dict[str, Any] = {
            "name": name,
            "params": params,
            "defaults": defaults,
            "locals": walker.locals,
            "returns": walker.returns,
            "events": walker.events,
            "calls": walker.calls,
        }
        if walker.self_assign:
            out["self_assign"] = walker.self_assign
        return out

    # -- values ---------------------------------------------------------------------------------
    def value(self, node: ast.AST | None, local_names: dict, self_name: str | None, depth: int = 0) -> Value:
        if node is None or depth > _MAX_VALUE_DEPTH:
            return UNKNOWN
        if isinstance(node, ast.Constant):
            v = node.value
            return ["lit", v] if isinstance(v, (bool, int, float, str)) or v is None else UNKNOWN
        if isinstance(node, ast.Name):
            if node.id in local_names:
                kind = local_names[node.id]
                if kind == "param":
                    return ["param", node.id]
                return ["loc", node.id, node.lineno]
            return ["name", node.id]
        if isinstance(node, ast.Attribute):
            if self_name is not None and isinstance(node.value, ast.Name) and node.value.id == self_name:
                return ["self", node.attr]
            inner = self.value(node.value, local_names, self_name, depth + 1)
            if inner[0] == "name":
                return ["name", f"{inner[1]}.{node.attr}"]
            return ["attr", inner, node.attr]
        if isinstance(node, ast.Call):
            func = self.value(node.func, local_names, self_name, depth + 1)
            args = [
                self.value(a, local_names, self_name, depth + 1) if not isinstance(a, ast.Starred) else ["*"]
                for a in node.args[:_MAX_ARGS]
            ]
            kwargs = {
                k.arg: self.value(k.value, local_names, self_name, depth + 1)
                for k in node.keywords
                if k.arg is not None
            }
            if any(k.arg is None for k in node.keywords):
                kwargs["**"] = UNKNOWN
            return ["call", func, args, kwargs, node.lineno]
        if isinstance(node, ast.Subscript):
            index = node.slice
            if isinstance(index, ast.Constant) and isinstance(index.value, (int, str)) and not isinstance(index.value, bool):
                return ["sub", self.value(node.value, local_names, self_name, depth + 1), index.value]
            return ["sub", self.value(node.value, local_names, self_name, depth + 1), None]
        if isinstance(node, (ast.Tuple, ast.List)):
            return ["tuple", [self.value(e, local_names, self_name, depth + 1) for e in node.elts[:_MAX_ARGS]]]
        if isinstance(node, ast.Compare):
            if any(isinstance(op, (ast.Is, ast.IsNot, ast.In, ast.NotIn)) for op in node.ops):
                return ["lit", None]  # `x is None`, `k in d`: a bool, not an array
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.BinOp):
            operands = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not):
            operands = [node.operand]
        else:
            operands = None
        if operands is not None:
            # arithmetic and comparisons: an array when an operand is one
            return ["binop", node.lineno, [self.value(o, local_names, self_name, depth + 1) for o in operands[:4]]]
        if isinstance(node, ast.IfExp):
            return ["either", [
                self.value(node.body, local_names, self_name, depth + 1),
                self.value(node.orelse, local_names, self_name, depth + 1),
            ]]
        if isinstance(node, ast.NamedExpr):
            return self.value(node.value, local_names, self_name, depth + 1)
        return UNKNOWN


class _FunctionWalker:
    """One pass over a function body: local assignments, returns, events and calls."""

    def __init__(self, owner: _Summarizer, params: list[str], kind: str) -> None:
        self.owner = owner
        self.kind = kind
        self.self_name = params[0] if kind == "method" and params else None
        self.names: dict[str, str] = {p: "param" for p in params}
        self.locals: dict[str, list] = {}
        self.returns: list[Value] = []
        self.events: list[list] = []
        self.calls: list[list] = []
        self.self_assign: dict[str, list] = {}
        self.withs: list[str] = []
        #: loop variables over ``m.parameters()`` (and friends) → the value of ``m``
        self.param_loops: dict[str, Value] = {}

    def value(self, node: ast.AST | None) -> Value:
        return self.owner.value(node, self.names, self.self_name)

    def block(self, body: list, *, loops: int, branches: int, grad: bool | None) -> None:
        if self.kind != "module":
            # names assigned anywhere in the function are local to it (Python's rule)
            for stmt in body:
                for target in _assigned_names(stmt):
                    self.names.setdefault(target, "local")
        for stmt in body:
            self.statement(stmt, loops, branches, grad)

    def statement(self, stmt: ast.stmt, loops: int, branches: int, grad: bool | None) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return  # nested definitions are not followed
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = getattr(stmt, "value", None)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            v = self.value(value) if not isinstance(stmt, ast.AugAssign) else ["binop", stmt.lineno]
            for t in targets:
                self.assign(t, v, stmt.lineno)
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "grad":
                    self.event("zero_grad", self._subject(t.value), stmt.lineno, loops, branches, grad)
                if (
                    isinstance(t, ast.Attribute)
                    and t.attr == "requires_grad"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, bool)
                ):
                    kind = "unfreeze" if value.value else "freeze"
                    self.event(kind, self._owner(t.value), stmt.lineno, loops, branches, grad)
            self.expressions(value, stmt.lineno, loops, branches, grad)
            return
        if isinstance(stmt, ast.Return):
            if stmt.value is not None:
                self.returns.append(self.value(stmt.value))
            self.expressions(stmt.value, stmt.lineno, loops, branches, grad)
            return
        if isinstance(stmt, ast.Expr):
            self.expressions(stmt.value, stmt.lineno, loops, branches, grad)
            return
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.expressions(stmt.iter, stmt.lineno, loops, branches, grad)
            self.assign(stmt.target, ["for", self.value(stmt.iter)], stmt.lineno)
            it = stmt.iter
            if (
                isinstance(stmt.target, ast.Name)
                and isinstance(it, ast.Call)
                and isinstance(it.func, ast.Attribute)
                and it.func.attr in ("parameters", "modules", "children")
            ):
                self.param_loops[stmt.target.id] = self.value(it.func.value)
            self.block(stmt.body, loops=loops + 1, branches=branches, grad=grad)
            self.block(stmt.orelse, loops=loops, branches=branches + 1, grad=grad)
            return
        if isinstance(stmt, ast.While):
            self.expressions(stmt.test, stmt.lineno, loops, branches, grad)
            self.block(stmt.body, loops=loops + 1, branches=branches, grad=grad)
            self.block(stmt.orelse, loops=loops, branches=branches + 1, grad=grad)
            return
        if isinstance(stmt, ast.If):
            self.expressions(stmt.test, stmt.lineno, loops, branches, grad)
            self.block(stmt.body, loops=loops, branches=branches + 1, grad=grad)
            self.block(stmt.orelse, loops=loops, branches=branches + 1, grad=grad)
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            inner = grad
            pushed = 0
            for item in stmt.items:
                expr = item.context_expr
                self.expressions(expr, stmt.lineno, loops, branches, grad)
                name = _dotted(expr.func if isinstance(expr, ast.Call) else expr) or ""
                self.withs.append(name)
                pushed += 1
                last = name.rsplit(".", 1)[-1]
                if last in _GRAD_OFF:
                    inner = False
                elif last == "enable_grad":
                    inner = True
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, ["with", self.value(expr)], stmt.lineno)
            self.block(stmt.body, loops=loops, branches=branches, grad=inner)
            del self.withs[len(self.withs) - pushed:]
            return
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.block(stmt.body, loops=loops, branches=branches, grad=grad)
            for handler in stmt.handlers:
                self.block(handler.body, loops=loops, branches=branches + 1, grad=grad)
            self.block(stmt.orelse, loops=loops, branches=branches + 1, grad=grad)
            self.block(stmt.finalbody, loops=loops, branches=branches, grad=grad)
            return
        if type(stmt).__name__ == "Match":
            for case in stmt.cases:  # type: ignore[attr-defined]
                self.block(case.body, loops=loops, branches=branches + 1, grad=grad)
            return
        if isinstance(stmt, ast.Delete):
            for t in stmt.targets:
                if isinstance(t, ast.Attribute) and t.attr == "grad":
                    self.event("zero_grad", self._subject(t.value), stmt.lineno, loops, branches, grad)

    def assign(self, target: ast.AST, value: Value, line: int) -> None:
        if isinstance(target, ast.Name):
            self.locals.setdefault(target.id, []).append([line, value])
            if self.kind == "module":
                self.names.setdefault(target.id, "local")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for i, el in enumerate(target.elts):
                if isinstance(el, ast.Starred):
                    self.assign(el.value, UNKNOWN, line)
                else:
                    self.assign(el, ["sub", value, i] if value[0] != "for" else UNKNOWN, line)
        elif (
            isinstance(target, ast.Attribute)
            and self.self_name is not None
            and isinstance(target.value, ast.Name)
            and target.value.id == self.self_name
        ):
            self.self_assign.setdefault(target.attr, []).append([value, line])

    def _subject(self, node: ast.AST) -> Value:
        return self.value(node)

    def _owner(self, node: ast.AST) -> Value:
        """Whose parameters a ``requires_grad`` switch is about: ``p`` of ``for p in
        m.parameters()`` is ``m``'s."""
        if isinstance(node, ast.Name) and node.id in self.param_loops:
            return self.param_loops[node.id]
        return self.value(node)

    def event(self, kind: str, subject: Value, line: int, loops: int, branches: int, grad: bool | None, **extra) -> None:
        record = {"k": kind, "s": subject, "l": line, "loops": loops, "br": branches}
        if grad is not None:
            record["grad"] = grad
        record.update(extra)
        self.events.append(record)

    def expressions(self, node: ast.AST | None, line: int, loops: int, branches: int, grad: bool | None) -> None:
        """Record the calls inside an expression (events and calls of other functions)."""
        if node is None:
            return
        stack = [node]
        pop, push, node_type, call = stack.pop, stack.append, ast.AST, ast.Call
        while stack:
            n = pop()
            kind = type(n)
            if kind is call:
                self.call(n, loops, branches, grad)
            # what ast.iter_child_nodes yields, in its order, without its generator (this walk
            # is most of a summary's cost) and without the leaves that hold no call
            fields = _CALL_FIELDS.get(kind)
            for name in fields if fields is not None else _call_fields(kind):
                value = getattr(n, name, None)
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, node_type):
                            push(item)
                elif isinstance(value, node_type):
                    push(value)

    def call(self, node: ast.Call, loops: int, branches: int, grad: bool | None) -> None:
        func = node.func
        line = node.lineno
        if isinstance(func, ast.Attribute) and func.attr == "requires_grad_":
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "requires_grad"), None)
            if arg is None or (isinstance(arg, ast.Constant) and isinstance(arg.value, bool)):
                kind = "freeze" if arg is not None and arg.value is False else "unfreeze"  # type: ignore[union-attr]
                self.event(kind, self._owner(func.value), line, loops, branches, grad)
        if isinstance(func, ast.Attribute):
            method = func.attr
            kind = _EVENT_METHODS.get(method)
            if kind is not None:
                receiver = self.value(func.value)
                extra: dict[str, Any] = {}
                if kind == "train" and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and arg.value is False:
                        kind = "eval"
                    elif not (isinstance(arg, ast.Constant) and arg.value is True):
                        extra["runtime"] = True
                if kind == "eval" and node.args:
                    kind = None  # not nn.Module.eval()
                if kind == "backward" and method == "backward" and node.args:
                    extra["arg"] = self.value(node.args[0])
                if kind == "step":
                    extra["nargs"] = len(node.args)
                    if node.args:
                        extra["arg"] = self.value(node.args[0])
                if kind is not None:
                    self.event(kind, receiver, line, loops, branches, grad, **extra)
        # only calls that may run a project function: `helper(...)`, `mod.helper(...)`,
        # `Class(...)`, `self.method(...)` (a method of a local object cannot be linked)
        dotted = _dotted(func)
        if dotted is not None:
            head = dotted.partition(".")[0]
            if head not in self.names or (head == self.self_name and "." in dotted):
                value = self.value(node)
                if value[1][0] in ("name", "self"):
                    self.calls.append([value, line, loops, branches, grad])


#: per node type, the fields an expression walk descends into (see :func:`_call_fields`)
_CALL_FIELDS: dict[type, tuple[str, ...]] = {}


def _call_fields(kind: type) -> tuple[str, ...]:
    """The fields of ``kind`` that may hold a call: none for a lambda's (or a nested
    definition's) body, which runs later, nor for names, constants and their contexts."""
    if issubclass(kind, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Name, ast.Constant)):
        fields: tuple[str, ...] = ()
    else:
        fields = tuple(f for f in kind._fields if f != "ctx")
    _CALL_FIELDS[kind] = fields
    return fields


def _assigned_names(stmt: ast.stmt) -> list[str]:
    out: list[str] = []
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.For, ast.AsyncFor)):
        targets = [stmt.target]
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                out.append(n.id)
    return out


def _flat(body: list) -> list:
    """Top-level statements, looking into ``if``/``try`` blocks (``try: import x except``)."""
    out = []
    for stmt in body:
        if isinstance(stmt, ast.If):
            out.extend(_flat(stmt.body))
            out.extend(_flat(stmt.orelse))
        elif isinstance(stmt, ast.Try):
            out.extend(_flat(stmt.body))
            for h in stmt.handlers:
                out.extend(_flat(h.body))
        else:
            out.append(stmt)
    return out


def _dotted(node: ast.AST | None) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _literal(node: ast.AST | None) -> Value:
    if isinstance(node, ast.Constant) and (isinstance(node.value, (bool, int, float, str)) or node.value is None):
        return ["lit", node.value]
    return UNKNOWN


def _string_list(node: ast.AST) -> list[str] | None:
    if isinstance(node, (ast.List, ast.Tuple)):
        out = []
        for e in node.elts:
            if not (isinstance(e, ast.Constant) and isinstance(e.value, str)):
                return None
            out.append(e.value)
        return out
    return None
