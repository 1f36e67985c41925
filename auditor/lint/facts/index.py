"""The per-file index, built during the engine's single traversal.

The :class:`Indexer` sees every node before the rules do (and leaves it after them), and records
scopes, statements in source order, the loops, ``with`` contexts and branches around each
statement, every call, every assignment and every return. Semantic questions (provenance,
training events, module structure) are answered from this index by the other fact modules, so
they never walk the tree again.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import libcst as cst

from torch_audit.lint.facts.names import canonical, dotted, import_bindings

#: grad-mode context managers and decorators, by qualified name → grad enabled?
GRAD_CONTEXTS = {
    "torch.no_grad": False,
    "torch.inference_mode": False,
    "torch.autograd.no_grad": False,
    "torch.autograd.grad_mode.no_grad": False,
    "torch.autograd.grad_mode.inference_mode": False,
    "torch.enable_grad": True,
    "torch.autograd.enable_grad": True,
    "torch.autograd.grad_mode.enable_grad": True,
}


@dataclasses.dataclass(eq=False)
class Assignment:
    """``name`` gets a value at statement ``stmt``.

    kind: ``assign`` (value is the assigned expression), ``unpack`` (element ``element`` of
    ``value``; ``starred`` for ``*rest``), ``aug`` (``value`` combined by ``op``), ``for`` (an
    element of the iterable ``value``), ``with`` (the result of entering ``value``), ``walrus``,
    ``param`` (a function parameter; ``value`` is its default or None), ``import``, ``def`` and
    ``class`` (a nested definition)."""

    name: str
    kind: str
    value: cst.BaseExpression | None
    stmt: "Statement | None"
    element: int | None = None
    starred: bool = False
    op: str | None = None
    target: cst.CSTNode | None = None

    @property
    def index(self) -> int:
        return self.stmt.index if self.stmt is not None else -1


@dataclasses.dataclass(eq=False)
class Loop:
    node: cst.For | cst.While
    stmt: "Statement"
    parent: "Loop | None"
    scope: "Scope"

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1


@dataclasses.dataclass(eq=False)
class Statement:
    node: cst.CSTNode
    index: int
    scope: "Scope"
    loops: tuple[Loop, ...]
    #: (qualified-or-dotted name, call-or-expression) of each enclosing ``with`` item, outermost first
    withs: tuple[tuple[str | None, cst.BaseExpression], ...]
    #: enclosing conditional constructs within the scope (If, Else, ExceptHandler, ...)
    branches: tuple[cst.CSTNode, ...]
    #: the ``try`` bodies around the statement (a raise there is caught)
    tries: tuple[cst.Try, ...] = ()

    @property
    def loop(self) -> Loop | None:
        return self.loops[-1] if self.loops else None

    def inside(self, loop: Loop) -> bool:
        return loop in self.loops


@dataclasses.dataclass(eq=False)
class Call:
    node: cst.Call
    stmt: Statement
    scope: "Scope"
    #: ``x.foo(...)`` → "foo"; ``foo(...)`` → "foo"
    method: str | None
    #: the receiver of a method call (``x`` in ``x.foo()``), else None
    receiver: cst.BaseExpression | None
    _qualname: str | None | bool = False

    @property
    def qualname(self) -> str | None:
        if self._qualname is False:
            self._qualname = self.scope.qualname(self.node.func)
        return self._qualname  # type: ignore[return-value]

    def arg(self, position: int | None = None, keyword: str | None = None) -> cst.Arg | None:
        return argument(self.node, position, keyword)


def argument(call: cst.Call, position: int | None = None, keyword: str | None = None) -> cst.Arg | None:
    """The argument passed by ``keyword`` or at ``position`` (0-based), else None."""
    if keyword is not None:
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a
    if position is not None:
        i = 0
        for a in call.args:
            if a.keyword is not None or a.star:
                if a.star == "*":
                    return None  # position unknowable after *args
                continue
            if i == position:
                return a
            i += 1
    return None


@dataclasses.dataclass(eq=False)
class Scope:
    node: cst.CSTNode
    kind: str  # module | class | function | lambda
    name: str
    parent: "Scope | None"
    bindings: dict[str, str] = dataclasses.field(default_factory=dict)
    assignments: dict[str, list[Assignment]] = dataclasses.field(default_factory=dict)
    #: ``self.<attr> = value`` in the methods of a class scope, keyed by attribute
    attributes: dict[str, list[Assignment]] = dataclasses.field(default_factory=dict)
    statements: list[Statement] = dataclasses.field(default_factory=list)
    calls: list[Call] = dataclasses.field(default_factory=list)
    returns: list[tuple[Statement, cst.BaseExpression | None]] = dataclasses.field(default_factory=list)
    loops: list[Loop] = dataclasses.field(default_factory=list)
    children: list["Scope"] = dataclasses.field(default_factory=list)
    params: list[str] = dataclasses.field(default_factory=list)
    decorators: list[str] = dataclasses.field(default_factory=list)
    #: ``global``/``nonlocal`` names: assignments here do not shadow outer bindings
    declared_outer: set[str] = dataclasses.field(default_factory=set)
    star_modules: list[str] = dataclasses.field(default_factory=list)

    # -- structure ---------------------------------------------------------------------------
    @property
    def class_scope(self) -> "Scope | None":
        """For a method, the class it is defined in."""
        if self.kind == "function" and self.parent is not None and self.parent.kind == "class":
            return self.parent
        return None

    @property
    def module_scope(self) -> "Scope":
        s = self
        while s.parent is not None:
            s = s.parent
        return s

    @property
    def in_pytest_test(self) -> bool:
        """Inside a pytest-style ``test*`` function or ``Test*`` class (at any depth)."""
        s: Scope | None = self
        while s is not None:
            if s.kind == "function" and s.name.startswith("test"):
                return True
            if s.kind == "class" and s.name.startswith("Test"):
                return True
            s = s.parent
        return False

    def functions(self) -> dict[str, "Scope"]:
        return {c.name: c for c in self.children if c.kind == "function"}

    def classes(self) -> dict[str, "Scope"]:
        return {c.name: c for c in self.children if c.kind == "class"}

    def walk(self) -> Iterator["Scope"]:
        yield self
        for c in self.children:
            yield from c.walk()

    # -- names -------------------------------------------------------------------------------
    def lookup_scope(self, name: str) -> "Scope | None":
        """The scope whose binding of ``name`` is visible here (Python's LEGB, minus builtins)."""
        s: Scope | None = self
        first = True
        while s is not None:
            if s.kind == "class" and not first:
                s = s.parent
                continue
            if name in s.declared_outer:
                s = s.parent
                first = False
                continue
            if name in s.bindings or name in s.assignments or name in s.params:
                return s
            s = s.parent
            first = False
        return None

    def qualname(self, expr: cst.BaseExpression | None, _depth: int = 0) -> str | None:
        """The qualified name of a dotted expression, through imports and simple aliases.

        ``nn.CrossEntropyLoss`` with ``from torch import nn`` → ``torch.nn.CrossEntropyLoss``.
        A local variable, parameter or anything else that is not an imported name → None."""
        name = dotted(expr)
        if name is None or _depth > 8:
            return None
        head, _, rest = name.partition(".")
        base = self._resolve_head(head, _depth)
        if base is None:
            return None
        return canonical(f"{base}.{rest}" if rest else base)

    def _resolve_head(self, head: str, depth: int) -> str | None:
        scope = self.lookup_scope(head)
        if scope is None:
            module = self.module_scope
            for star in module.star_modules:
                # `from torch.nn import *`: only trust capitalised layer names and functional ops
                if star.startswith("torch"):
                    return f"{star}.{head}"
            return None
        if head in scope.params:
            return None
        assigned = scope.assignments.get(head, [])
        if head in scope.bindings and not [a for a in assigned if a.kind != "import"]:
            return scope.bindings[head]
        # An alias `CE = nn.CrossEntropyLoss` counts only when it is the name's one definition.
        real = [a for a in assigned if a.kind != "import"]
        if len(real) == 1 and real[0].kind == "assign" and head not in scope.bindings:
            value = real[0].value
            if isinstance(value, (cst.Name, cst.Attribute)):
                return scope.qualname(value, depth + 1)
        return None

    def definitions(self, name: str) -> list[Assignment]:
        return self.assignments.get(name, [])

    def reaching(self, name: str, before: int) -> Assignment | None:
        """The last assignment of ``name`` in this scope before statement ``before`` (source order).

        Inside a loop, a later assignment in the same loop body also reaches the top of the next
        iteration; callers that care use :meth:`definitions`."""
        best = None
        for a in self.assignments.get(name, ()):
            if a.index < before and (best is None or a.index >= best.index):
                best = a
        return best


class Indexer:
    """Builds the scope tree of one file while the engine walks it."""

    def __init__(self, module: cst.Module) -> None:
        self.module_scope = Scope(module, "module", "<module>", None)
        self._scopes: list[Scope] = [self.module_scope]
        self._stmts: list[Statement] = []
        self._loops: list[Loop] = []
        self._withs: list[tuple[str | None, cst.BaseExpression]] = []
        self._branches: list[cst.CSTNode] = []
        self._tries: list[cst.Try] = []
        self._block_pushes: list[list[str]] = []
        self._counter = 0
        # per-scope saved context, so that a nested function does not inherit the outer loop
        self._saved: list[tuple] = []
        self.all_calls: list[Call] = []
        #: id(cst.Call) → its record, filled as the walk goes (so lookups during the walk work)
        self.calls_by_node: dict[int, Call] = {}
        self.by_node: dict[int, Statement] = {}

    # -- helpers -----------------------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        return self._scopes[-1]

    @property
    def statement(self) -> Statement | None:
        return self._stmts[-1] if self._stmts else None

    def _push_scope(self, node: cst.CSTNode, kind: str, name: str) -> Scope:
        scope = Scope(node, kind, name, self.scope)
        self.scope.children.append(scope)
        self._scopes.append(scope)
        self._saved.append((self._loops, self._withs, self._branches, self._tries))
        self._loops, self._withs, self._branches, self._tries = [], [], [], []
        return scope

    def _pop_scope(self) -> None:
        self._scopes.pop()
        self._loops, self._withs, self._branches, self._tries = self._saved.pop()

    def _new_statement(self, node: cst.CSTNode) -> None:
        stmt = Statement(
            node,
            self._counter,
            self.scope,
            tuple(self._loops),
            tuple(self._withs),
            tuple(self._branches),
            tuple(self._tries),
        )
        self._counter += 1
        self.scope.statements.append(stmt)
        self._stmts.append(stmt)
        self.by_node[id(node)] = stmt

    def _assign(self, target: cst.BaseExpression, kind: str, value, **extra) -> None:
        stmt = self.statement
        if isinstance(target, cst.Name):
            self.scope.assignments.setdefault(target.value, []).append(
                Assignment(target.value, kind, value, stmt, target=target, **extra)
            )
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = target.elements
            for i, el in enumerate(elements):
                inner = el.value
                starred = isinstance(el, cst.StarredElement)
                if kind in ("assign", "with", "walrus"):
                    self._assign(inner, "unpack", value, element=i, starred=starred)
                elif kind == "for":
                    # `for name, p in x.named_parameters()`: element i of each item of x
                    self._assign(inner, "for", value, element=i, starred=starred)
                else:
                    self._assign(inner, kind, value, element=i, starred=starred)
        elif isinstance(target, cst.Attribute):
            # self.<attr> = value inside a method: remember on the class
            if isinstance(target.value, cst.Name) and self.scope.kind == "function":
                cls = self.scope.class_scope
                params = self.scope.params
                if cls is not None and params and target.value.value == params[0]:
                    cls.attributes.setdefault(target.attr.value, []).append(
                        Assignment(target.attr.value, kind, value, stmt, target=target, **extra)
                    )
        elif isinstance(target, cst.StarredElement):
            self._assign(target.value, kind, value, starred=True, **extra)

    def _define(self, name: str, kind: str) -> None:
        self.scope.assignments.setdefault(name, []).append(
            Assignment(name, kind, None, self.statement)
        )

    # -- scopes ------------------------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._new_statement(node)
        self._define(node.name.value, "class")
        self._push_scope(node, "class", node.name.value)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self._pop_scope()
        self._stmts.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        outer = self.scope
        self._new_statement(node)
        self._define(node.name.value, "def")
        scope = self._push_scope(node, "function", node.name.value)
        scope.decorators = [
            outer.qualname(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator)
            or dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator)
            or ""
            for d in node.decorators
        ]
        p = node.params
        for param in (*p.posonly_params, *p.params, *p.kwonly_params):
            scope.params.append(param.name.value)
            scope.assignments.setdefault(param.name.value, []).append(
                Assignment(param.name.value, "param", param.default, None, target=param)
            )
        for star in (p.star_arg, p.star_kwarg):
            if isinstance(star, cst.Param):
                scope.params.append(star.name.value)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._pop_scope()
        self._stmts.pop()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        scope = self._push_scope(node, "lambda", "<lambda>")
        for param in (*node.params.posonly_params, *node.params.params, *node.params.kwonly_params):
            scope.params.append(param.name.value)

    def leave_Lambda(self, node: cst.Lambda) -> None:
        self._pop_scope()

    def visit_Global(self, node: cst.Global) -> None:
        self.scope.declared_outer.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.scope.declared_outer.update(n.name.value for n in node.names)

    # -- statements --------------------------------------------------------------------------
    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self._new_statement(node)

    def leave_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self._stmts.pop()

    def visit_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        self._enter_block(node)
        self._new_statement(node)

    def leave_SimpleStatementSuite(self, node: cst.SimpleStatementSuite) -> None:
        self._stmts.pop()
        self._leave_block(node)

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self._enter_block(node)

    def leave_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self._leave_block(node)

    def _compound(self, node: cst.CSTNode) -> None:
        self._new_statement(node)

    def _compound_leave(self, node: cst.CSTNode) -> None:
        self._stmts.pop()

    visit_If = visit_While = visit_With = visit_Try = visit_TryStar = visit_Match = _compound
    leave_If = leave_For = leave_While = leave_With = leave_Try = leave_TryStar = _compound_leave
    leave_Match = _compound_leave

    def _enter_block(self, block: cst.CSTNode) -> None:
        """A suite begins: push the loop, ``with`` items or branch that governs it."""
        owner = self._stmts[-1].node if self._stmts else None
        pushed: list[str] = []
        if isinstance(owner, (cst.For, cst.While)) and getattr(owner, "body", None) is block:
            loop = Loop(owner, self._stmts[-1], self._loops[-1] if self._loops else None, self.scope)
            self.scope.loops.append(loop)
            self._loops.append(loop)
            pushed.append("loop")
        elif isinstance(owner, cst.With) and owner.body is block:
            for item in owner.items:
                expr = item.item
                func = expr.func if isinstance(expr, cst.Call) else expr
                name = self.scope.qualname(func) or dotted(func)
                self._withs.append((name, expr))
                pushed.append("with")
        elif isinstance(owner, (cst.Try, cst.TryStar)) and owner.body is block:
            self._tries.append(owner)
            pushed.append("try")
        elif isinstance(owner, cst.If) and owner.body is block:
            self._branches.append(owner)
            pushed.append("branch")
        elif owner is not None and not isinstance(owner, (cst.FunctionDef, cst.ClassDef)):
            # else/elif/except/finally/case suites: conditional
            self._branches.append(block)
            pushed.append("branch")
        self._block_pushes.append(pushed)

    def _leave_block(self, block: cst.CSTNode) -> None:
        pushed = self._block_pushes.pop()
        for kind in reversed(pushed):
            if kind == "loop":
                self._loops.pop()
            elif kind == "with":
                self._withs.pop()
            elif kind == "try":
                self._tries.pop()
            else:
                self._branches.pop()

    # -- facts inside statements -------------------------------------------------------------
    def visit_Import(self, node: cst.Import) -> None:
        for local, qual in import_bindings(node):
            self.scope.bindings[local] = qual
            self.scope.assignments.setdefault(local, []).append(
                Assignment(local, "import", None, self.statement)
            )

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            mod = dotted(node.module) if node.module is not None else None
            if mod and not node.relative:
                self.scope.star_modules.append(mod)
            return
        for local, qual in import_bindings(node):
            self.scope.bindings[local] = qual
            self.scope.assignments.setdefault(local, []).append(
                Assignment(local, "import", None, self.statement)
            )

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._assign(t.target, "assign", node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._assign(node.target, "assign", node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._assign(node.target, "aug", node.value, op=type(node.operator).__name__)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._assign(node.target, "walrus", node.value)

    def visit_For(self, node: cst.For) -> None:
        self._compound(node)
        self._assign(node.target, "for", node.iter)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._assign(node.asname.name, "with", node.item)

    def visit_Return(self, node: cst.Return) -> None:
        if self.statement is not None:
            self.scope.returns.append((self.statement, node.value))

    def visit_Call(self, node: cst.Call) -> None:
        stmt = self.statement
        if stmt is None:  # a decorator or default value evaluated at definition time
            return
        func = node.func
        if isinstance(func, cst.Attribute):
            method, receiver = func.attr.value, func.value
        elif isinstance(func, cst.Name):
            method, receiver = func.value, None
        else:
            method, receiver = None, None
        call = Call(node, stmt, self.scope, method, receiver)
        self.scope.calls.append(call)
        self.all_calls.append(call)
        self.calls_by_node[id(node)] = call
