"""Applying the rules' fixes to files, safely: what ``--fix`` and ``--diff`` run (the command
itself, which files and what is reported, is :mod:`torch_audit.lint.fix_command`).

Per file (:func:`fix_bytes`, pure: bytes in, bytes out):

1. lint the bytes as read (the positions of the edits belong to exactly these bytes);
2. take the applicable fixes (safe ones; unsafe ones too with ``--unsafe-fixes``), apply the
   ones that do not overlap, defer the conflicting ones to the next pass;
3. parse the result again (libcst, and CPython's compiler when the original compiled): a pass
   that produces invalid code is retried fix by fix, and a fix that breaks the code is dropped
   and reported as an internal error, never written;
4. lint the new text with the same settings and repeat, at most :data:`MAX_PASSES` times.

The text keeps its encoding, BOM and line endings (inserted text takes the file's newline).
Writing (:func:`write_if_unchanged`) goes to a temporary file in the same directory, is
fsynced, keeps the permissions, and is renamed over the original only if the file still has
the content (size and hash) that was read: a file changed by someone else in the meantime is
skipped with a message. Read-only files are not written. An interrupted run leaves every file
either old or new.
"""

from __future__ import annotations

import ast
import codecs
import dataclasses
import difflib
import hashlib
import os
import re
import stat
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterable

import libcst as cst

from torch_audit.findings import Applicability, Edit, Finding, Fix
from torch_audit.lint.discover import shown
from torch_audit.lint.engine import FileResult, LintSettings, decode
from torch_audit.lint.sources import lint_source

#: Fix passes per file before giving up (each pass re-lints the new text).
MAX_PASSES = 10
_NEWLINE = re.compile(r"\r\n?|\n")


class FixError(Exception):
    """A fix cannot be applied to the text (bad positions, overlapping edits)."""


# -- text ------------------------------------------------------------------------------------
def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(m.end() for m in _NEWLINE.finditer(text))
    return starts


def _offset(starts: list[int], text: str, line: int, column: int) -> int:
    if line < 1 or column < 1:
        raise FixError(f"position {line}:{column} is before the start of the file")
    if line > len(starts):
        if line == len(starts) + 1 and column == 1 and text.endswith(("\n", "\r")):
            return len(text)
        raise FixError(f"line {line} is past the end of the file")
    start = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    offset = start + column - 1
    if offset > end:
        raise FixError(f"column {column} is past the end of line {line}")
    return offset


def dominant_newline(text: str) -> str:
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    if crlf > lf and crlf >= cr:
        return "\r\n"
    if cr > lf and cr > crlf:
        return "\r"
    return "\n"


@dataclasses.dataclass(frozen=True)
class _Span:
    start: int
    end: int
    content: str


def _spans(fix: Fix, text: str, starts: list[int], newline: str) -> list[_Span]:
    spans = []
    for e in fix.edits:
        s = _offset(starts, text, e.start_line, e.start_column)
        t = _offset(starts, text, e.end_line, e.end_column)
        if t < s:
            raise FixError("an edit ends before it starts")
        content = _NEWLINE.sub(newline, e.content) if newline != "\n" else e.content
        spans.append(_Span(s, t, content))
    spans.sort(key=lambda sp: (sp.start, sp.end))
    for a, b in zip(spans, spans[1:]):
        if _overlap(a, b):
            raise FixError("the fix's own edits overlap")
    return spans


def _overlap(a: _Span, b: _Span) -> bool:
    if a.start == b.start:
        return True  # two insertions at one point, or an insertion at a replaced range's start
    return a.start < b.end and b.start < a.end


def apply_edits(text: str, spans: Iterable[_Span]) -> str:
    """Apply non-overlapping spans (offsets into ``text``)."""
    out = text
    for sp in sorted(spans, key=lambda sp: sp.start, reverse=True):
        out = out[: sp.start] + sp.content + out[sp.end :]
    return out


def applicable(finding: Finding, unsafe: bool) -> bool:
    fix = finding.fix
    if fix is None or not fix.edits:
        return False
    return fix.applicability == Applicability.SAFE or unsafe


def syntax_problem(text: str, path: str, check_compile: bool = True) -> str | None:
    """None when ``text`` parses (libcst, and CPython's compiler when ``check_compile``)."""
    try:
        cst.parse_module(text)
    except Exception as exc:  # libcst's ParserSyntaxError and native parser failures
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if check_compile:
        try:
            compile(text, path, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            return f"{exc.msg} (line {exc.lineno})"
        except (ValueError, RecursionError, MemoryError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


# -- one file --------------------------------------------------------------------------------
@dataclasses.dataclass
class FileFix:
    """What fixing one file did. ``fixed`` is None when the text did not change."""

    path: str
    original: bytes
    fixed: bytes | None = None
    applied: int = 0
    #: fixes applied per rule code
    applied_by_code: dict[str, int] = dataclasses.field(default_factory=dict)
    #: the findings of the final text (or of the original, when nothing changed)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    #: findings fixed (as reported on the text they were fixed in)
    fixed_findings: list[Finding] = dataclasses.field(default_factory=list)
    internal_errors: int = 0
    tracebacks: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    passes: int = 0
    #: (st_size, st_mtime_ns) when read, for the check before writing
    stat: tuple[int, int] | None = None

    @property
    def changed(self) -> bool:
        return self.fixed is not None and self.fixed != self.original


def _encode(text: str, encoding: str, bom: bool) -> bytes:
    if encoding.lower().replace("_", "-") in ("utf-8-sig",):
        encoding = "utf-8"
    data = text.encode(encoding)
    return codecs.BOM_UTF8 + data if bom else data


def _internal_error(path: str, finding: Finding, detail: str, line: int | None = None) -> Finding:
    from torch_audit.catalog import load_catalog

    rule = load_catalog(("static",))["internal-error"]
    return Finding(
        code=rule.code,
        name=rule.name,
        severity=rule.severity,
        message=rule.message.format(rule=f"the fix of {finding.code} ({finding.name})", detail=detail),
        path=path,
        line=line or finding.line,
        column=finding.column,
    )


class _Passes:
    """The state of fixing one text over several passes: the text, how to encode it, and the
    fixes rejected so far (with the internal-error findings that report them)."""

    def __init__(self, path: str, text: str, encoding: str, bom: bool) -> None:
        self.path = path
        self.text = text
        self.encoding = encoding
        self.bom = bom
        self.newline = dominant_newline(text)
        self.check_compile = syntax_problem(text, path) is None
        self.rejected: set[tuple[str, tuple[Edit, ...]]] = set()
        self.dropped: list[Finding] = []

    def open(self, f: Finding) -> bool:
        """Not rejected yet."""
        return (f.code, f.fix.edits) not in self.rejected  # type: ignore[union-attr]

    def reject(self, f: Finding, detail: str) -> None:
        self.rejected.add((f.code, f.fix.edits))  # type: ignore[union-attr]
        self.dropped.append(_internal_error(self.path, f, detail))

    def choose(self, candidates: list[Finding]) -> tuple[list[tuple[Finding, list[_Span]]], list[Finding]]:
        """One pass's fixes, greedy in source order (conflicts wait for the next pass), and the
        findings whose fix has the same edits as a chosen one (fixed with it)."""
        starts = _line_starts(self.text)
        prepared = []
        for f in candidates:
            try:
                prepared.append((f, _spans(f.fix, self.text, starts, self.newline)))  # type: ignore[arg-type]
            except FixError as exc:
                self.reject(f, f"bad edit: {exc}")
        prepared.sort(key=lambda item: (item[1][0].start, item[1][-1].end, item[0].code) if item[1] else (0, 0, item[0].code))
        chosen: list[tuple[Finding, list[_Span]]] = []
        taken: list[_Span] = []
        seen_fixes: set[tuple[Edit, ...]] = set()
        duplicates: list[Finding] = []
        for f, spans in prepared:
            key = f.fix.edits  # type: ignore[union-attr]
            if key in seen_fixes:
                duplicates.append(f)  # the same edits, already chosen: fixed with it
                continue
            if any(_overlap(a, b) for a in spans for b in taken):
                continue  # deferred to the next pass
            seen_fixes.add(key)
            chosen.append((f, spans))
            taken.extend(spans)
        return chosen, duplicates

    def apply(
        self, chosen: list[tuple[Finding, list[_Span]]], duplicates: list[Finding]
    ) -> tuple[str, list[tuple[Finding, list[_Span]]], list[Finding]]:
        """The text with the chosen fixes applied. When the result does not parse, the fixes are
        tried one by one and the ones that break the code are rejected."""
        new_text = apply_edits(self.text, [s for _, ss in chosen for s in ss])
        if syntax_problem(new_text, self.path, self.check_compile) is None:
            return new_text, chosen, duplicates
        good: list[tuple[Finding, list[_Span]]] = []
        for f, spans in chosen:
            trial = apply_edits(self.text, [*(s for _, ss in good for s in ss), *spans])
            p = syntax_problem(trial, self.path, self.check_compile)
            if p is None:
                good.append((f, spans))
            else:
                self.reject(f, f"the fix would produce invalid code ({p}); not applied")
        fixed_keys = {f.fix.edits for f, _ in good}  # type: ignore[union-attr]
        duplicates = [d for d in duplicates if d.fix.edits in fixed_keys]  # type: ignore[union-attr]
        return apply_edits(self.text, [s for _, ss in good for s in ss]), good, duplicates

    def encode(self, text: str) -> bytes:
        return _encode(text, self.encoding, self.bom)


def fix_bytes(
    path: str,
    data: bytes,
    settings: LintSettings,
    *,
    unsafe: bool = False,
    only: set[str] | None = None,
    ignored: frozenset[str] | set[str] = frozenset(),
    max_passes: int = MAX_PASSES,
) -> FileFix:
    """Apply fixes to the bytes of one file until none is left (or ``max_passes``).

    ``only``: restrict to fixes of these codes. ``ignored``: codes dropped from every lint
    (per-file ignores). Never raises for a bad fix: it is dropped and reported."""
    if path.lower().endswith(".ipynb"):  # fixes the cells' code, splices only changed cells back
        return fix_notebook(path, data, settings, unsafe=unsafe, only=only, ignored=ignored, max_passes=max_passes)
    out = FileFix(path, data)

    def lint(raw: bytes) -> FileResult:
        result = lint_source(path, raw, settings)
        if ignored:
            result.findings = [f for f in result.findings if f.code not in ignored]
        return result

    def wanted(f: Finding) -> bool:
        return applicable(f, unsafe) and (only is None or f.code in only)

    result = lint(data)
    out.findings = result.findings
    out.internal_errors = result.internal_errors
    out.tracebacks = list(result.tracebacks)
    out.notes = list(result.notes)
    if not any(wanted(f) for f in result.findings):
        return out
    try:
        text, encoding = decode(data)
    except ValueError:
        return out
    state = _Passes(path, text, encoding, data.startswith(codecs.BOM_UTF8))
    for pass_no in range(1, max_passes + 1):
        candidates = [f for f in result.findings if wanted(f) and state.open(f)]
        if not candidates:
            break
        out.passes = pass_no
        chosen, duplicates = state.choose(candidates)
        if not chosen:
            break
        new_text, chosen, duplicates = state.apply(chosen, duplicates)
        try:
            new_data = state.encode(new_text)
        except UnicodeEncodeError as exc:
            for f, _ in chosen:
                state.reject(f, f"the fixed text cannot be encoded as {encoding}: {exc.reason}")
            continue
        if new_text == state.text:
            break  # fixes that change nothing: stop rather than loop
        for f in [*(f for f, _ in chosen), *duplicates]:
            out.applied += 1
            out.applied_by_code[f.code] = out.applied_by_code.get(f.code, 0) + 1
            out.fixed_findings.append(f)
        state.text = new_text
        result = lint(new_data)
    else:
        if any(wanted(f) and state.open(f) for f in result.findings):
            out.notes.append(f"{path}: fixes did not converge after {max_passes} passes")
    fixed = state.encode(state.text)
    if fixed != data:
        out.fixed = fixed
    out.findings = sorted([*result.findings, *state.dropped], key=lambda f: f.sort_key)
    out.internal_errors = result.internal_errors + len(state.dropped)
    out.tracebacks = list(result.tracebacks)
    return out


def fix_notebook(path: str, data: bytes, settings: LintSettings, **kwargs: Any) -> FileFix:
    """``--fix`` for a notebook: :func:`fix_bytes` on the virtual module, written back with
    :func:`~torch_audit.lint.notebook.apply_cell_edits`. Returns a ``FileFix`` with the
    notebook's bytes and cell-relative findings."""
    from torch_audit.lint.notebook import NotebookError, apply_cell_edits, lint_notebook, load, map_finding

    out = FileFix(path, data)
    first = lint_notebook(path, data, settings)
    ignored = kwargs.get("ignored") or frozenset()
    out.findings = [f for f in first.findings if f.code not in ignored]
    out.internal_errors = first.internal_errors
    out.tracebacks = list(first.tracebacks)
    out.notes = list(first.notes)
    try:
        nb = load(data)
    except NotebookError:
        return out
    if not nb.python:
        return out
    # fix_bytes lints through lint_source, which dispatches on the suffix: give it the virtual
    # module under a .py name, and map everything back to the notebook afterwards.
    virtual = path + ".py"
    inner = fix_bytes(virtual, nb.source.encode("utf-8"), settings, **kwargs)
    if not inner.changed:
        return out
    try:
        fixed = apply_cell_edits(data, inner.fixed.decode("utf-8"))  # type: ignore[union-attr]
    except ValueError as exc:
        out.notes.append(f"{path}: fixes not applied: {exc}")
        return out
    after = lint_notebook(path, fixed, settings)
    out.fixed = fixed if fixed != data else None
    out.applied = inner.applied
    out.applied_by_code = dict(inner.applied_by_code)
    out.fixed_findings = [map_finding(nb, f, path) for f in inner.fixed_findings]
    dropped = [map_finding(nb, f, path) for f in inner.findings if f.name == "internal-error"]
    out.findings = sorted(
        [f for f in after.findings if f.code not in ignored] + [d for d in dropped if d.message not in {f.message for f in after.findings}],
        key=lambda f: (f.cell or 0, f.line, f.column, f.code),
    )
    out.internal_errors = after.internal_errors + len(dropped)
    out.tracebacks = list(after.tracebacks) + [t.replace(virtual, path) for t in inner.tracebacks]
    out.notes = list(after.notes) + [n.replace(virtual, path) for n in inner.notes]
    out.passes = inner.passes
    return out


def fix_path(path: str, settings: LintSettings, **kwargs: Any) -> FileFix:
    """Read a file (remembering its size and mtime) and fix its bytes."""
    from torch_audit.lint.runner import _NotRegular, _read_source, _size_limit, _TooBig

    p = Path(path)
    try:
        st = os.stat(p)
        data = _read_source(p, _size_limit(path, settings)[0])  # kind and size checked first
    except (_TooBig, _NotRegular):
        out = FileFix(path, b"")
        out.notes.append(f"{path}: not fixed, no longer a regular file of at most the size limit")
        return out
    except OSError as exc:
        out = FileFix(path, b"")
        out.notes.append(f"{path}: cannot read: {exc.strerror or exc}")
        return out
    try:
        out = fix_bytes(path, data, settings, **kwargs)
    except RecursionError:
        out = FileFix(path, data)
        out.notes.append(f"{path}: not fixed, nested too deeply")
    except Exception as exc:  # a bug here must not lose the other files
        out = FileFix(path, data)
        out.internal_errors = 1
        out.tracebacks.append(f"{path}: fixer\n" + traceback.format_exc())
        out.notes.append(f"{path}: not fixed: internal error {type(exc).__name__}: {exc}")
    out.stat = (st.st_size, st.st_mtime_ns)
    return out


# -- writing ---------------------------------------------------------------------------------
class FileChanged(Exception):
    """The file on disk is no longer the one that was read."""


class ReadOnly(Exception):
    """The file is not writable."""


def write_if_unchanged(path: str | os.PathLike[str], expected: bytes, data: bytes) -> None:
    """Atomically replace ``path``'s content ``expected`` with ``data``.

    A temporary file in the same directory is written, fsynced and given the original's
    permissions; just before the rename the file is read again, and if its size or content
    hash differ from ``expected`` nothing is written (:class:`FileChanged`). A symlink is
    followed (the link stays a link). A read-only file raises :class:`ReadOnly`."""
    real = os.path.realpath(path)
    st = os.stat(real)
    if not os.access(real, os.W_OK) or not (st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        raise ReadOnly(real)
    expected_hash = hashlib.sha256(expected).digest()
    directory = os.path.dirname(real) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(real)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if hasattr(os, "chown"):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError:
                pass  # not permitted: the file gets our ownership, as any editor's save would
        # last check, as close to the rename as possible
        now = os.stat(real)
        with open(real, "rb") as fh:
            current = fh.read()
        if now.st_size != len(expected) or hashlib.sha256(current).digest() != expected_hash:
            raise FileChanged(real)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def unified_diff(path: str, old: bytes, new: bytes) -> str:
    try:
        a, _ = decode(old)
        b, _ = decode(new)
    except ValueError:
        a, b = old.decode("utf-8", "replace"), new.decode("utf-8", "replace")
    lines_a = a.splitlines(keepends=True)
    lines_b = b.splitlines(keepends=True)
    diff = difflib.unified_diff(lines_a, lines_b, fromfile=path, tofile=path)
    out = []
    for line in diff:
        if not line.endswith(("\n", "\r")):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
    return "".join(out)


# -- many files ------------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init_worker(settings: LintSettings, kwargs: dict[str, Any]) -> None:
    _worker["settings"] = settings
    _worker["kwargs"] = kwargs


def _fix_one(item: tuple[str, frozenset[str]]) -> FileFix:
    path, ignored = item
    return fix_path(path, _worker["settings"], ignored=ignored, **_worker["kwargs"])


def fix_files(
    items: list[tuple[str, frozenset[str]]],
    settings: LintSettings,
    *,
    jobs: int = 1,
    **kwargs: Any,
) -> list[FileFix]:
    """Fix ``(path, ignored codes)`` items, in worker processes when there are many."""
    if jobs <= 1 or len(items) < 4:
        return [fix_path(p, settings, ignored=ig, **kwargs) for p, ig in items]
    from torch_audit.lint.workers import worker_pool

    with worker_pool(jobs, _init_worker, (settings, kwargs)) as pool:
        return list(pool.map(_fix_one, items, chunksize=1))
