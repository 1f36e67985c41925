"""What a rule sees of the file it is checking: the tree, the shared facts, and ``report``."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import libcst as cst

from torch_audit.findings import Edit, Finding, Fix
from torch_audit.lint.facts.index import GRAD_CONTEXTS, Call, Indexer, Scope, Statement

if TYPE_CHECKING:  # pragma: no cover
    from libcst.metadata import CodeRange, MetadataWrapper

    from torch_audit.rule import StaticRule


@dataclasses.dataclass
class RawFinding:
    rule: type
    node: cst.CSTNode
    message: str
    fix: Fix | None
    help: str | None = None
    related: tuple = ()


class FileContext:
    """Per-file state shared by the engine, the facts and the rules."""

    def __init__(self, path: str, source: str, module: cst.Module, settings: Any = None) -> None:
        self.path = path
        self.source = source
        self.module = module
        self.settings = settings
        #: the whole-program model (None when the file is linted on its own)
        self.project = getattr(settings, "project", None)
        self.indexer = Indexer(module)
        #: ancestors of the node being visited, the node itself last
        self.stack: list[cst.CSTNode] = []
        self.raw: list[RawFinding] = []
        self._wrapper: "MetadataWrapper | None" = None
        self._positions: Any = None
        self._parents: Any = None

    # -- where are we ------------------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        """The innermost scope (module, class, function) of the node being visited."""
        return self.indexer.scope

    @property
    def module_scope(self) -> Scope:
        return self.indexer.module_scope

    @property
    def statement(self) -> Statement | None:
        """The innermost statement around the node being visited."""
        return self.indexer.statement

    @property
    def parent(self) -> cst.CSTNode | None:
        return self.stack[-2] if len(self.stack) > 1 else None

    def qualname(self, expr: cst.BaseExpression | None, scope: Scope | None = None) -> str | None:
        """Qualified name of a dotted expression as seen from ``scope`` (default: current)."""
        return (scope or self.scope).qualname(expr)

    def call(self, node: cst.Call) -> Call | None:
        """The indexed record of a call (its statement, scope, qualified name); during the walk,
        every call visited so far is known."""
        return self.indexer.calls_by_node.get(id(node))

    def grad_enabled(self, stmt: Statement | None = None) -> bool | None:
        """False under ``no_grad``/``inference_mode`` (``with`` or decorator), True under
        ``enable_grad``, None when the code does not say (the caller decides)."""
        stmt = stmt or self.statement
        if stmt is None:
            return None
        for name, expr in reversed(stmt.withs):
            if name in GRAD_CONTEXTS:
                return GRAD_CONTEXTS[name]
            if name == "torch.set_grad_enabled" and isinstance(expr, cst.Call) and expr.args:
                value = expr.args[0].value
                if isinstance(value, cst.Name) and value.value in ("True", "False"):
                    return value.value == "True"
        scope: Scope | None = stmt.scope
        while scope is not None and scope.kind in ("function", "lambda"):
            for dec in reversed(scope.decorators):
                if dec in GRAD_CONTEXTS:
                    return GRAD_CONTEXTS[dec]
            scope = scope.parent
        return None

    # -- shared analyses (built on first use) -------------------------------------------------
    @functools.cached_property
    def crossfile(self):
        from torch_audit.lint.facts.crossfile import CrossFile

        return CrossFile(self)

    @functools.cached_property
    def dataflow(self):
        from torch_audit.lint.facts.dataflow import Dataflow

        return Dataflow(self)

    @functools.cached_property
    def modules(self):
        from torch_audit.lint.facts.modules import ModuleFacts

        return ModuleFacts(self)

    @functools.cached_property
    def inference(self):
        from torch_audit.lint.facts.inference import InferenceFacts

        return InferenceFacts(self)

    @functools.cached_property
    def training(self):
        from torch_audit.lint.facts.training import TrainingFacts

        return TrainingFacts(self)

    # -- reporting ---------------------------------------------------------------------------
    def add_finding(
        self, rule: "StaticRule | type", node: cst.CSTNode, message: str, fix: Fix | None,
        help: str | None = None, related: tuple = (),
    ) -> None:
        cls = rule if isinstance(rule, type) else type(rule)
        self.raw.append(RawFinding(cls, node, message, fix, help, tuple(related)))

    def _metadata(self) -> None:
        if self._wrapper is None:
            # imported here: libcst.metadata costs ~0.1 s at start-up, and most files have no finding
            from libcst.metadata import MetadataWrapper, PositionProvider

            self._wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = self._wrapper.resolve(PositionProvider)

    def position(self, node: cst.CSTNode) -> "CodeRange":
        """Line (1-based) and column (0-based) range of a node, computed once per file."""
        self._metadata()
        return self._positions[node]

    def parent_of(self, node: cst.CSTNode) -> cst.CSTNode | None:
        if self._parents is None:
            from torch_audit.lint.traverse import parent_map

            self._parents = parent_map(self.module)
        return self._parents.get(node)

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def edit_replacing(self, node: cst.CSTNode, new: "cst.CSTNode | str") -> Edit:
        rng = self.position(node)
        text = new if isinstance(new, str) else self.module.code_for_node(new)
        return Edit(rng.start.line, rng.start.column + 1, rng.end.line, rng.end.column + 1, text)

    def statement_lines(self, node: cst.CSTNode) -> tuple[int, int]:
        """The lines of the statement carrying ``node``; for a compound statement, its header.

        A suppression comment on any of these lines applies to the finding."""
        current: cst.CSTNode | None = node
        while current is not None and not isinstance(
            current, (cst.SimpleStatementLine, cst.BaseCompoundStatement, cst.SimpleStatementSuite)
        ):
            current = self.parent_of(current)
        if current is None:
            rng = self.position(node)
            return rng.start.line, rng.end.line
        rng = self.position(current)
        if isinstance(current, cst.BaseCompoundStatement):
            body = current.body
            if isinstance(body, cst.IndentedBlock):
                body_start = self.position(body).start.line
                return rng.start.line, max(rng.start.line, body_start - 1)
            return rng.start.line, rng.start.line
        if isinstance(current, cst.SimpleStatementSuite):
            # `if x: a = 1` — the suite shares its line with the header
            return rng.start.line, rng.end.line
        return rng.start.line, rng.end.line

    def findings(self) -> list[Finding]:
        out = []
        for raw in self.raw:
            rng = self.position(raw.node)
            out.append(
                Finding(
                    code=raw.rule.code,
                    name=raw.rule.name,
                    severity=raw.rule.severity,
                    message=raw.message,
                    path=self.path,
                    line=rng.start.line,
                    column=rng.start.column + 1,
                    end_line=rng.end.line,
                    end_column=rng.end.column + 1,
                    fix=raw.fix,
                    statement_lines=self.statement_lines(raw.node),
                    help=raw.help,
                    related=raw.related,
                )
            )
        return out
