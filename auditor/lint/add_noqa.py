"""``lint --add-noqa``: suppress every current finding with a ``# torch-audit: ignore[CODE]``.

Where the comment goes (see :mod:`torch_audit.lint.suppress`: a suppression applies on any line
of the reported statement, or of a compound statement's header):

1. a line of the statement that already carries a ``# torch-audit: ignore[...]``: the code is
   merged into its list;
2. else the finding's own line, when a comment can end it;
3. else the next such line of the statement, else the last one before the finding.

A comment "can end" a line when the tokenizer ends the line there (a NEWLINE or NL token): not
inside a multi-line string, not after a backslash continuation. Existing comments (``# noqa``,
``# type: ignore``, prose) are kept and the directive is appended after them. A second run
finds nothing left to suppress and changes nothing. Files are written atomically; notebooks
through their JSON (only the changed cells' ``source`` is rewritten).
"""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
from pathlib import Path
from typing import Any, Callable

from torch_audit.findings import Finding

_BRACKET_DIRECTIVE = re.compile(r"torch-audit\s*:\s*ignore\s*\[(?P<codes>[^\]]*)\]", re.IGNORECASE)
#: Findings a comment cannot suppress (the engine's own: syntax errors, unreadable files,
#: internal errors, unused suppressions).
_ENGINE_RULES = frozenset({"syntax-error", "unreadable-file", "internal-error", "unused-suppression"})


def suppressible(finding: Finding) -> bool:
    return finding.name not in _ENGINE_RULES


@dataclasses.dataclass
class _Lines:
    """What the tokenizer says about each line of a source."""

    lines: list[str]  # as tokenize reads them (each with its own line ending)
    endable: set[int]  # 1-based lines a comment may be appended to
    comments: dict[int, tuple[int, str]]  # line -> (0-based column, comment text)


def _scan(source: str) -> _Lines | None:
    lines = io.StringIO(source).readlines()
    endable: set[int] = set()
    comments: dict[int, tuple[int, str]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.NL):
                endable.add(tok.start[0])
            elif tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = (tok.start[1], tok.string)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    # the last line of a file without a final newline gets a NEWLINE token past its end
    return _Lines(lines, {n for n in endable if n <= len(lines)}, comments)


def _target_line(finding: Finding, info: _Lines) -> int | None:
    # Only the statement's lines: a finding on a decorator is suppressed on the `def` line.
    first, last = finding.statement_lines or (finding.line, finding.end_line or finding.line)
    candidates = [n for n in range(first, last + 1) if n in info.endable]
    if not candidates:
        return None
    for n in candidates:
        comment = info.comments.get(n)
        if comment is not None and _BRACKET_DIRECTIVE.search(comment[1]):
            return n
    if finding.line in candidates:
        return finding.line
    after = [n for n in candidates if n > finding.line]
    return after[0] if after else candidates[-1]


def _split_ending(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


def _with_codes(line: str, codes: list[str], comment: tuple[int, str] | None) -> str:
    body, ending = _split_ending(line)
    if comment is not None:
        column, text = comment
        m = _BRACKET_DIRECTIVE.search(text)
        if m is not None:
            present = [c.strip() for c in m.group("codes").split(",") if c.strip()]
            known = {c.upper() for c in present}
            merged = ", ".join(present + [c for c in codes if c.upper() not in known])
            start, end = column + m.start("codes"), column + m.end("codes")
            return body[:start] + merged + body[end:] + ending
    return body.rstrip(" \t") + f"  # torch-audit: ignore[{', '.join(codes)}]" + ending


def add_suppressions(source: str, findings: list[Finding]) -> tuple[str, int, list[Finding]]:
    """``source`` with a suppression for each of ``findings`` (positions in ``source``).

    Returns the new text, the number of findings suppressed and those that could not be (no
    line of their statement can take a comment; the tokenizer failed)."""
    wanted = [f for f in findings if suppressible(f)]
    if not wanted:
        return source, 0, []
    info = _scan(source)
    if info is None:
        return source, 0, wanted
    by_line: dict[int, list[str]] = {}
    missed: list[Finding] = []
    added = 0
    for f in wanted:
        target = _target_line(f, info)
        if target is None:
            missed.append(f)
            continue
        codes = by_line.setdefault(target, [])
        if f.code not in codes:
            codes.append(f.code)
        added += 1
    lines = list(info.lines)
    for n, codes in by_line.items():
        lines[n - 1] = _with_codes(lines[n - 1], sorted(codes), info.comments.get(n))
    return "".join(lines), added, missed


@dataclasses.dataclass
class FileOutcome:
    path: str
    new: bytes | None = None  # None: nothing to change
    original: bytes = b""
    added: int = 0
    missed: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    internal_errors: int = 0


def _python_bytes(
    path: str, data: bytes, settings: Any, ignored: frozenset[str], findings: list[Finding] | None = None
) -> FileOutcome:
    import codecs

    from torch_audit.lint.engine import decode, lint_python
    from torch_audit.lint.autofix import syntax_problem

    out = FileOutcome(path)
    if findings is None:
        result = lint_python(path, data, settings)
        out.internal_errors = result.internal_errors
        findings = result.findings
    findings = [f for f in findings if f.code not in ignored]
    try:
        text, encoding = decode(data)
    except ValueError:
        return out
    new_text, out.added, missed = add_suppressions(text, findings)
    out.missed = len(missed)
    if new_text == text:
        return out
    if syntax_problem(text, path) is None and (problem := syntax_problem(new_text, path)) is not None:
        # cannot happen by construction; never write code that no longer parses
        out.notes.append(f"{path}: suppressions not added: they would break the code ({problem})")
        out.added = 0
        return out
    if encoding.lower().replace("_", "-") == "utf-8-sig":
        encoding = "utf-8"
    try:
        encoded = new_text.encode(encoding)
    except UnicodeEncodeError:
        out.notes.append(f"{path}: suppressions not added: cannot encode them as {encoding}")
        out.added = 0
        return out
    out.new = (codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b"") + encoded
    return out


def _notebook_bytes(path: str, data: bytes, settings: Any, ignored: frozenset[str]) -> FileOutcome:
    from torch_audit.lint import notebook

    out = FileOutcome(path)
    try:
        nb = notebook.load(data)
    except notebook.NotebookError:
        return out
    if not nb.python:
        return out
    # The cells as one virtual module, as the linter reads them: its findings carry the
    # statement lines the placement needs (cell-relative findings do not).
    inner = _python_bytes(path + ".py", nb.source.encode("utf-8"), settings, ignored)
    out.internal_errors, out.missed = inner.internal_errors, inner.missed
    out.notes = [n.replace(path + ".py", path) for n in inner.notes]
    if inner.new is None:
        return out
    try:
        out.new = notebook.apply_cell_edits(data, inner.new.decode("utf-8"))
    except ValueError as exc:
        out.notes.append(f"{path}: suppressions not added: {exc}")
        return out
    out.added = inner.added
    return out


def add_noqa_path(
    path: str, settings: Any, ignored: frozenset[str] = frozenset(), findings: list[Finding] | None = None
) -> FileOutcome:
    """Read a file and compute its new bytes (``new`` is None when nothing changes).

    ``findings``: the lint run's findings of a Python file (they carry the statement lines, also
    from the cache, and any whole-program facts); without them the file is linted again.
    Notebooks are always linted again, as their virtual module."""
    from torch_audit.lint.notebook import is_notebook

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FileOutcome(path, notes=[f"{path}: cannot read: {exc.strerror or exc}"])
    if len(data) > settings.max_file_bytes:
        return FileOutcome(path)
    if is_notebook(path):
        outcome = _notebook_bytes(path, data, settings, ignored)
    else:
        outcome = _python_bytes(path, data, settings, ignored, findings)
    if outcome.new == data:
        outcome.new = None
    outcome.original = data
    return outcome


def add_noqa_command(
    results: list[Any], settings: Any, options: Any, *, ignored_for: Callable[[str], frozenset[str]]
) -> int:
    """Suppress the findings of ``results`` (the lint run's) in place; 0, or 2 on a failure."""
    from torch_audit.atomic import write_bytes_atomic
    from torch_audit.output import EXIT_ERROR, EXIT_OK, message, stderr

    quiet = options.quiet

    total = files = missed = failures = errors = 0
    for result in results:
        errors += result.internal_errors  # a failing rule's findings were not suppressed
        ignored = ignored_for(result.path)
        if not any(suppressible(f) and f.code not in ignored for f in result.findings):
            continue
        outcome = add_noqa_path(result.path, settings, ignored, result.findings)
        missed += outcome.missed
        for note in outcome.notes:
            if not quiet:
                message(note, "note")
        if outcome.new is None:
            continue
        try:
            if Path(result.path).read_bytes() != outcome.original:
                message(f"{result.path}: changed by another program meanwhile; not written", "warning")
                continue
            write_bytes_atomic(Path(result.path), outcome.new)
        except OSError as exc:
            message(f"{result.path}: cannot write: {exc.strerror or exc}", "error")
            failures += 1
            continue
        total += outcome.added
        files += 1
    if not quiet:
        stderr(f"Added {total} suppression{'s' if total != 1 else ''} to {files} file{'s' if files != 1 else ''}.")
        if missed:
            message(f"{missed} finding(s) could not be suppressed by a comment", "warning")
    if errors:
        message(f"{errors} internal error(s); run with --verbose for tracebacks", "error")
    return EXIT_ERROR if failures or errors else EXIT_OK
