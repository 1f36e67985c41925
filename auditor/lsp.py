"""``torch-audit server``: a Language Server (LSP) on standard input and output.

- diagnostics when a Python document is opened, changed or saved, linted in this process with
  the engine's :func:`~torch_audit.lint.engine.lint_python` (no subprocess per keystroke);
- code actions: each finding's fix (safe or unsafe, as its title says), "suppress with a
  comment" (the placement of ``--add-noqa``), and ``source.fixAll`` for every safe fix;
- hover over a finding: the rule's message, what to do and why;
- configuration: the ``[tool.torch-audit]`` table of the nearest ``pyproject.toml`` (or
  ``torch-audit.toml``) above each document, as ``torch-audit lint`` reads it: selection,
  rule options, per-file-ignores and excludes. A changed file is read again.

Nothing here imports torch (pygls and the static rules only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from torch_audit import __version__
from torch_audit.findings import Applicability, Edit, Finding, Severity

SOURCE = "torch-audit"
FIX_ALL = "source.fixAll.torch-audit"
_SEVERITY = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.INFO: types.DiagnosticSeverity.Information,
}


@dataclasses.dataclass
class _Setup:
    """What linting a document needs, from its configuration file."""

    settings: Any  # LintSettings
    config: Any  # Config
    ignored: frozenset[str]  # per-file-ignores for this document
    excluded: bool
    catalog: Any


class Linter:
    """Configuration lookup (cached by file and modification time) and in-process linting."""

    def __init__(self) -> None:
        self._configs: dict[tuple[Any, ...], Any] = {}  # Selection

    def _resolved(self, path: Path) -> Any:  # Selection
        from torch_audit.catalog import UnknownSelector, load_catalog
        from torch_audit.config import ConfigError, find_config
        from torch_audit.lint.options import LintOptions
        from torch_audit.lint.selection import select_rules

        config_path = find_config(path)
        try:
            stamp = config_path.stat().st_mtime_ns if config_path is not None else None
        except OSError:
            stamp = None
        key = (str(config_path), stamp)
        if key not in self._configs:
            problem: Exception | None = None
            for kinds in (("static",), ("static", "runtime")):
                catalog = load_catalog(kinds)
                try:
                    chosen = select_rules([str(path)], LintOptions(config_file=config_path), catalog)
                except (ConfigError, UnknownSelector) as exc:
                    problem = exc
                    continue
                self._configs[key] = chosen
                break
            else:
                raise ConfigError(str(problem))
        return self._configs[key]

    def setup(self, path: Path) -> _Setup:
        """Raises ConfigError (a one-line message) for a broken configuration."""
        from torch_audit.lint.engine import LintSettings
        from torch_audit.lint.stdin import is_excluded

        chosen = self._resolved(path)
        config = chosen.config
        settings = LintSettings.of(chosen.rules, config, config.torch_version)
        return _Setup(settings, config, chosen.ignored_for(str(path)), is_excluded(path, config), chosen.catalog)

    def lint(self, path: Path, text: str) -> tuple[list[Finding], _Setup]:
        from torch_audit.lint.engine import lint_python

        setup = self.setup(path)
        if setup.excluded:
            return [], setup
        from torch_audit.lint.project import project_of

        data = text.encode("utf-8", "surrogatepass")
        setup.settings.project = project_of(path, data)  # the buffer sees the local modules it imports
        result = lint_python(str(path), data, setup.settings)
        return [f for f in result.findings if f.code not in setup.ignored], setup


class AuditServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("torch-audit", __version__)
        self.linter = Linter()
        #: the findings last published, by document URI: (document version, findings)
        self.findings: dict[str, tuple[int | None, list[Finding]]] = {}
        self._reported_config_errors: set[str] = set()


def _range(doc: Any, line: int, column: int, end_line: int, end_column: int) -> types.Range:
    """A client-unit range from 1-based, code-point positions."""
    server = types.Range(
        start=types.Position(line=max(line - 1, 0), character=max(column - 1, 0)),
        end=types.Position(line=max(end_line - 1, 0), character=max(end_column - 1, 0)),
    )
    return doc.range_to_client_units(server)


def _finding_range(doc: Any, f: Finding) -> types.Range:
    return _range(doc, f.line, f.column, f.end_line or f.line, f.end_column or f.column)


def _diagnostic(doc: Any, f: Finding) -> types.Diagnostic:
    message = f.message + (f"\nhelp: {f.help}" if f.help else "")
    return types.Diagnostic(
        range=_finding_range(doc, f),
        message=message,
        severity=_SEVERITY[f.severity],
        code=f.code,
        source=SOURCE,
    )


def _lint_and_publish(ls: AuditServer, uri: str) -> None:
    doc = ls.workspace.get_text_document(uri)
    path = to_fs_path(uri)
    # file: documents of Python; a notebook's JSON is not Python source (its cells come through
    # the LSP notebook protocol, which this server does not implement)
    if path is None or path.lower().endswith(".ipynb"):
        return
    if doc.language_id not in (None, "", "python") and not path.endswith((".py", ".pyi")):
        return
    from torch_audit.config import ConfigError

    try:
        findings, _ = ls.linter.lint(Path(path), doc.source)
    except ConfigError as exc:
        message = f"torch-audit: {exc}"
        if message not in ls._reported_config_errors:  # once, not on every keystroke
            ls._reported_config_errors.add(message)
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=message))
        findings = []
    ls.findings[uri] = (doc.version, findings)
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=uri, version=doc.version, diagnostics=[_diagnostic(doc, f) for f in findings])
    )


def _overlaps(a: types.Range, b: types.Range) -> bool:
    def key(p: types.Position) -> tuple[int, int]:
        return (p.line, p.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)


def _text_edits(doc: Any, edits: tuple[Edit, ...]) -> list[types.TextEdit]:
    return [
        types.TextEdit(range=_range(doc, e.start_line, e.start_column, e.end_line, e.end_column), new_text=e.content)
        for e in edits
    ]


def _suppression_edit(doc: Any, f: Finding) -> types.TextEdit | None:
    """The one-line edit ``--add-noqa`` would make for ``f``."""
    from torch_audit.lint.add_noqa import add_suppressions

    old = doc.source
    new, added, _ = add_suppressions(old, [f])
    if not added or new == old:
        return None
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    for n, (a, b) in enumerate(zip(old_lines, new_lines)):
        if a != b:
            body_a, body_b = a.rstrip("\r\n"), b.rstrip("\r\n")
            return types.TextEdit(range=_range(doc, n + 1, 1, n + 1, len(body_a) + 1), new_text=body_b)
    return None


def _code_actions(ls: AuditServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    version, findings = ls.findings.get(uri, (None, []))
    if version != doc.version:  # stale: lint the current text first
        _lint_and_publish(ls, uri)
        version, findings = ls.findings.get(uri, (None, []))
    only = params.context.only
    wants_fix_all = only is None or any(FIX_ALL.startswith(kind) for kind in only)
    wants_quickfix = only is None or types.CodeActionKind.QuickFix in only
    actions: list[types.CodeAction] = []
    if wants_quickfix:
        for f in findings:
            frange = _finding_range(doc, f)
            if not _overlaps(frange, params.range):
                continue
            diagnostic = _diagnostic(doc, f)
            if f.fix is not None and f.fix.edits:
                unsafe = f.fix.applicability == Applicability.UNSAFE
                actions.append(types.CodeAction(
                    title=f"{f.code}: {f.fix.description}" + (" (unsafe fix)" if unsafe else ""),
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=[diagnostic],
                    is_preferred=not unsafe,
                    edit=types.WorkspaceEdit(changes={uri: _text_edits(doc, f.fix.edits)}),
                ))
            edit = _suppression_edit(doc, f)
            if edit is not None:
                actions.append(types.CodeAction(
                    title=f"{f.code}: suppress with a `# torch-audit: ignore[{f.code}]` comment",
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=[diagnostic],
                    edit=types.WorkspaceEdit(changes={uri: [edit]}),
                ))
    if wants_fix_all and any(f.fix is not None and f.fix.applicability == Applicability.SAFE for f in findings):
        fixed = _fix_all(ls, uri, doc)
        if fixed is not None:
            lines = doc.source.splitlines(keepends=True)
            end = _range(doc, len(lines) + 1, 1, len(lines) + 1, 1).end
            whole = types.Range(start=types.Position(line=0, character=0), end=end)
            actions.append(types.CodeAction(
                title="torch-audit: apply all safe fixes",
                kind=FIX_ALL,
                edit=types.WorkspaceEdit(changes={uri: [types.TextEdit(range=whole, new_text=fixed)]}),
            ))
    return actions


def _fix_all(ls: AuditServer, uri: str, doc: Any) -> str | None:
    from torch_audit.lint.autofix import fix_bytes

    path = Path(to_fs_path(uri) or "document.py")
    setup = ls.linter.setup(path)
    if setup.excluded:
        return None
    # a .py name: the document is Python whatever its path says
    fx = fix_bytes(str(path.with_suffix(".py")), doc.source.encode("utf-8"), setup.settings, ignored=setup.ignored)
    if not fx.changed:
        return None
    return fx.fixed.decode("utf-8")  # type: ignore[union-attr]


def _hover(ls: AuditServer, params: types.HoverParams) -> types.Hover | None:
    uri = params.text_document.uri
    doc = ls.workspace.get_text_document(uri)
    _, findings = ls.findings.get(uri, (None, []))
    point = types.Range(start=params.position, end=params.position)
    parts = []
    for f in findings:
        if not _overlaps(_finding_range(doc, f), point):
            continue
        parts.append(_rule_help(ls, uri, f))
    if not parts:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value="\n\n---\n\n".join(parts)))


def _rule_help(ls: AuditServer, uri: str, f: Finding) -> str:
    from torch_audit.catalog import load_catalog

    rule = load_catalog().get(f.code)
    lines = [f"**{f.code} {f.name}** ({f.severity.value}): {f.message}"]
    if f.help:
        lines += ["", f"**How to fix:** {f.help}"]
    if rule is not None:
        sections = rule.doc_sections()
        for title in ("What it does", "Why is this bad?"):
            if sections.get(title):
                lines += ["", f"**{title}**", "", sections[title]]
    lines += ["", f"`torch-audit rule {f.code}` shows examples; suppress with `# torch-audit: ignore[{f.code}]`."]
    return "\n".join(lines)


def build_server() -> AuditServer:
    server = AuditServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: AuditServer, params: types.DidOpenTextDocumentParams) -> None:
        _lint_and_publish(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AuditServer, params: types.DidChangeTextDocumentParams) -> None:
        _lint_and_publish(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: AuditServer, params: types.DidSaveTextDocumentParams) -> None:
        _lint_and_publish(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AuditServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.findings.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix, FIX_ALL]),
    )
    def code_action(ls: AuditServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        return _code_actions(ls, params)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: AuditServer, params: types.HoverParams) -> types.Hover | None:
        return _hover(ls, params)

    return server


def main() -> None:
    build_server().start_io()
