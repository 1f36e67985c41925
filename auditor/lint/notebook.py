"""Jupyter notebooks (``.ipynb``) for the linter: read code cells, lint them as one module,
map positions back to cells, and write fixes back into only the cells they changed.

No nbformat dependency: a notebook is JSON and the stdlib ``json`` module reads it. A small
position-tracking scanner (:func:`_scan`) also records where each cell's ``source`` sits in the
raw file, so that

- SARIF, GitHub and GitLab reports can point at the right line of the ``.ipynb`` file itself:
  each finding carries its ``raw_region``, computed here when the notebook is linted
  (:func:`map_finding`), so that the reporters never read the file again, and
- ``--fix`` can splice a changed cell's new ``source`` into the original bytes, leaving every
  other byte (outputs, metadata, formatting, the other cells) as it was
  (:func:`apply_cell_edits`).

The code cells are joined, in order, into one *virtual* Python module (a notebook runs top to
bottom, so a model defined in cell 2 and trained in cell 5 is one program). IPython syntax is
blanked without moving any other line or column: line magics (``%time``), shell escapes
(``!pip install``), help (``obj?``), ``x = !cmd`` / ``x = %magic`` assignments (the value
becomes ``...``) and whole non-Python cell magics (``%%bash``, ``%%writefile``); the body of
Python cell magics (``%%time``, ``%%capture``, ...) is linted. A blanked line inside an
indented block becomes ``pass`` so the block still parses. A cell that is not valid Python on
its own is reported as a syntax error in that cell and left out; the others are still linted.

Findings of notebooks carry ``cell`` (1-based, counting *all* cells of the notebook, markdown
included, as editors number them) and a line and column relative to that cell; the text format
shows ``notebook.ipynb:cell 3:5:9: TA101 ...``.

Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from json.decoder import scanstring
from typing import Any

from torch_audit.findings import Edit, Finding, Fix

NOTEBOOK_SUFFIX = ".ipynb"
#: Separates the cells in the virtual module; a comment, so no rule sees it, and distinct
#: enough to split a fixed module back into its cells.
MARKER = "# %% torch-audit cell {index}"
_MARKER_RE = re.compile(r"^# %% torch-audit cell (\d+)\r?$")
#: A notebook bigger than this (raw bytes; outputs with images make notebooks big) is skipped.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024

#: Cell magics whose body is Python that IPython runs in the kernel.
PYTHON_CELL_MAGICS = frozenset(
    {"time", "timeit", "capture", "prun", "debug", "memit", "mprun", "snakeviz", "autoreload", "skip_if"}
)
_HELP = re.compile(r"\?{1,2}[\w.]+|[\w.]+\?{1,2}")
#: line magics that run the Python statement after them (and their options)
_STATEMENT_MAGIC = re.compile(r"%(?:time|timeit|prun|memit|debug)\s+(?:-[A-Za-z]\s*\d*\s+)*(?=[^\s-])")
_ASSIGN_MAGIC = re.compile(r"^(?P<target>\s*[A-Za-z_][\w.\[\], ]*?\s*=)\s*[%!]")


class NotebookError(ValueError):
    """The bytes are not a readable Jupyter notebook."""


def is_notebook(path: str) -> bool:
    return str(path).lower().endswith(NOTEBOOK_SUFFIX)


# -- a JSON scanner that remembers where the cell sources are --------------------------------
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None, "NaN": float("nan"),
             "Infinity": float("inf"), "-Infinity": float("-inf")}


@dataclasses.dataclass
class _SourceSpan:
    """Where one cell's ``source`` value is in the raw text."""

    start: int  # offset of the value's first character ("[" or '"')
    end: int  # offset just past the value
    is_list: bool
    #: (offset of the opening quote, decoded value) of each string of the source
    strings: list[tuple[int, str]]


#: The path of a value that cannot lead to a cell's source (anything below an output, the
#: metadata, ...): its children keep it. Cells are located by their path from the document's
#: root, ("cells", n, "source"), never by meeting a "cells" key somewhere: an output or the
#: metadata may hold any JSON, a rendered notebook included.
_ELSEWHERE = ("<elsewhere>",)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: dict[int, _SourceSpan] = {}

    def ws(self, i: int) -> int:
        return _WS.match(self.text, i).end()  # type: ignore[union-attr]

    def error(self, i: int, what: str) -> NotebookError:
        line = self.text.count("\n", 0, i) + 1
        col = i - (self.text.rfind("\n", 0, i) + 1) + 1
        return NotebookError(f"invalid JSON at line {line} column {col}: {what}")

    def value(self, i: int, path: tuple) -> tuple[Any, int]:
        i = self.ws(i)
        if i >= len(self.text):
            raise self.error(i, "unexpected end of file")
        c = self.text[i]
        if c == '"':
            try:
                return scanstring(self.text, i + 1, True)
            except ValueError as exc:
                raise self.error(i, str(exc).split(":")[0]) from None
        if c == "{":
            return self.obj(i, path)
        if c == "[":
            return self.arr(i, path)
        m = _NUMBER.match(self.text, i)
        if m and m.end() > i:
            num = m.group()
            return (float(num) if any(ch in num for ch in ".eE") else int(num)), m.end()
        for word, val in _LITERALS.items():
            if self.text.startswith(word, i):
                return val, i + len(word)
        raise self.error(i, "expected a value")

    def obj(self, i: int, path: tuple) -> tuple[dict, int]:
        out: dict[str, Any] = {}
        i = self.ws(i + 1)
        if self.text.startswith("}", i):
            return out, i + 1
        while True:
            i = self.ws(i)
            if not self.text.startswith('"', i):
                raise self.error(i, "expected a property name")
            key, i = scanstring(self.text, i + 1, True)
            i = self.ws(i)
            if not self.text.startswith(":", i):
                raise self.error(i, "expected ':'")
            start = self.ws(i + 1)
            if path == ():  # the document: its "cells" (the last one, as json reads a repeated key)
                if key == "cells":
                    self.spans = {}
                child = ("cells",) if key == "cells" else _ELSEWHERE
            elif len(path) == 2 and path[0] == "cells":  # a cell
                child = _ELSEWHERE
                if key == "source":
                    self.spans.pop(path[1], None)  # a repeated "source": the last one counts
            else:
                child = _ELSEWHERE
            val, i = self.value(start, child)
            if key == "source" and len(path) == 2 and path[0] == "cells":
                self._record(path[1], start, i, val)
            out[key] = val
            i = self.ws(i)
            if self.text.startswith(",", i):
                i += 1
                continue
            if self.text.startswith("}", i):
                return out, i + 1
            raise self.error(i, "expected ',' or '}'")

    def arr(self, i: int, path: tuple) -> tuple[list, int]:
        out: list[Any] = []
        i = self.ws(i + 1)
        if self.text.startswith("]", i):
            return out, i + 1
        # only the cells list needs element paths; everything else is scanned as elsewhere
        track = path == ("cells",)
        while True:
            val, i = self.value(i, ("cells", len(out)) if track else _ELSEWHERE)
            out.append(val)
            i = self.ws(i)
            if self.text.startswith(",", i):
                i += 1
                continue
            if self.text.startswith("]", i):
                return out, i + 1
            raise self.error(i, "expected ',' or ']'")

    def _record(self, cell: int, start: int, end: int, val: Any) -> None:
        strings: list[tuple[int, str]] = []
        if isinstance(val, str):
            strings.append((start, val))
            self.spans[cell] = _SourceSpan(start, end, False, strings)
            return
        if not isinstance(val, list):
            return
        i = start + 1
        for item in val:
            i = self.ws(i)
            if not self.text.startswith('"', i) or not isinstance(item, str):
                return  # not a list of strings: not a notebook source we can map
            strings.append((i, item))
            _, i = scanstring(self.text, i + 1, True)
            i = self.ws(i)
            if self.text.startswith(",", i):
                i += 1
        self.spans[cell] = _SourceSpan(start, end, True, strings)


def _scan(text: str) -> tuple[Any, dict[int, _SourceSpan]]:
    scanner = _Scanner(text)
    value, end = scanner.value(0, ())
    if scanner.ws(end) != len(text):
        raise scanner.error(scanner.ws(end), "extra data after the notebook")
    return value, scanner.spans


# -- IPython syntax ----------------------------------------------------------------------------
def _scan_line(line: str, state: list) -> None:
    """Advance ``state`` = [bracket depth, open string quote or None, backslash continuation]
    over one physical line (a small, tolerant tokenizer: magics make real tokenizing fail)."""
    depth, quote, _ = state
    i, n = 0, len(line)
    body = line.rstrip("\r\n")
    n = len(body)
    while i < n:
        c = body[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if body.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        if c == "#":
            break
        if c in "\"'":
            quote = c * 3 if body.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    continuation = body.endswith("\\") and not (quote is None and "#" in body and _in_comment(body))
    if quote is not None and len(quote) == 1 and not continuation:
        quote = None  # an unterminated one-line string ends at the line (a syntax error anyway)
    state[:] = [depth, quote, continuation]


def _in_comment(body: str) -> bool:
    """Whether the trailing backslash of ``body`` is inside a comment (rough, for continuations)."""
    quote = None
    for c in body:
        if quote is not None:
            if c == quote:
                quote = None
            continue
        if c in "\"'":
            quote = c
        elif c == "#":
            return True
    return False


def _is_magic(stripped: str) -> bool:
    if stripped.startswith(("%", "!")):
        return True
    code = stripped.rstrip()
    return bool(code) and _HELP.fullmatch(code) is not None


def _blank(line: str, replacement: str = "") -> str:
    """``line`` replaced by ``replacement`` plus the line's own newline."""
    body = line.rstrip("\r\n")
    return replacement + line[len(body):]


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def blank_magics(code: str) -> tuple[str, set[int], dict[int, int]]:
    """``code`` with IPython syntax blanked (same number of lines), the 0-based indexes of the
    lines that were changed, and the columns by which statement magics (``%time stmt``) moved
    their line to the left."""
    lines = code.splitlines(keepends=True)
    changed: set[int] = set()
    shifts: dict[int, int] = {}
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        name = lines[first].lstrip()[2:].split(None, 1)[0] if lines[first].lstrip()[2:].strip() else ""
        if name not in PYTHON_CELL_MAGICS:
            return "".join(_blank(line) for line in lines), set(range(len(lines))), shifts
        lines[first] = _blank(lines[first])
        changed.add(first)
    state: list = [0, None, False]
    i = 0
    while i < len(lines):
        if i not in changed and state == [0, None, False]:  # at the start of a statement
            i = _blank_statement(lines, i, changed, shifts, state)
        else:
            if i not in changed:
                _scan_line(lines[i], state)
            i += 1
    return "".join(lines), changed, shifts


def _blank_statement(lines: list[str], i: int, changed: set[int], shifts: dict[int, int], state: list) -> int:
    """Blank the IPython syntax of the statement starting at line ``i`` (a statement magic, a
    line magic or shell escape with its continuation lines, an ``x = !cmd`` assignment), or scan
    a Python line; the index of the next line."""
    line = lines[i]
    stripped = line.lstrip(" \t")
    continued = line.rstrip("\r\n").endswith("\\")
    m = _STATEMENT_MAGIC.match(stripped) if stripped.startswith("%") else None
    if m and not continued:
        # %time stmt: lint the statement, moved left over the magic
        lines[i] = _indent_of(line) + stripped[m.end():]
        shifts[i] = m.end()
        changed.add(i)
        _scan_line(lines[i], state)
        return i + 1
    if _is_magic(stripped):
        indent = _indent_of(line)
        lines[i] = _blank(line, indent + "pass" if indent else "")
        changed.add(i)
        while continued and i + 1 < len(lines):  # a magic continued with backslashes
            i += 1
            continued = lines[i].rstrip("\r\n").endswith("\\")
            lines[i] = _blank(lines[i])
            changed.add(i)
        return i + 1
    m = _ASSIGN_MAGIC.match(line)
    if m:
        lines[i] = _blank(line, m.group("target") + " ...")
        changed.add(i)
        return i + 1
    _scan_line(line, state)
    return i + 1


# -- the notebook and its virtual module -------------------------------------------------------
@dataclasses.dataclass
class CodeCell:
    index: int  # 1-based position among all cells
    original: str  # the cell's source as stored
    code: str  # the Python linted (magics blanked); always ends with a newline
    blanked: set[int]  # 0-based lines of ``code`` that differ from ``original``
    shifts: dict[int, int] = dataclasses.field(default_factory=dict)  # 0-based line -> columns
    start_line: int = 0  # first line of ``code`` in the virtual module (1-based)
    syntax_error: tuple[int, int, str] | None = None  # (line, column, message) in the cell

    @property
    def line_count(self) -> int:
        return self.code.count("\n")


@dataclasses.dataclass
class Notebook:
    cells: list[CodeCell]
    source: str  # the virtual module
    spans: dict[int, _SourceSpan]  # by 0-based cell position
    text: str  # the raw JSON text
    python: bool = True  # False for notebooks of another kernel language

    def locate(self, line: int) -> tuple[CodeCell, int] | None:
        """(cell, line in the cell) of a line of the virtual module; None on a marker line."""
        for cell in reversed(self.cells):
            if line >= cell.start_line:
                rel = line - cell.start_line + 1
                if rel > cell.line_count:
                    return (cell, cell.line_count) if cell.line_count else None
                return cell, rel
        return None


def _cell_source(value: Any) -> str:
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _language(nb: dict) -> str | None:
    meta = nb.get("metadata")
    if not isinstance(meta, dict):
        return None
    info = meta.get("language_info")
    if isinstance(info, dict) and isinstance(info.get("name"), str):
        return info["name"].lower()
    spec = meta.get("kernelspec")
    if isinstance(spec, dict) and isinstance(spec.get("language"), str):
        return spec["language"].lower()
    return None


def _decode_bytes(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    return text[1:] if text.startswith("\ufeff") else text


def _syntax_error(code: str) -> tuple[int, int, str] | None:
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(code, "<cell>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        try:  # newer syntax than this interpreter knows is still linted, as in .py files
            import libcst as cst

            cst.parse_module(code)
            return None
        except Exception:
            pass
        return exc.lineno or 1, exc.offset or 1, exc.msg or "invalid syntax"
    except (ValueError, RecursionError, MemoryError) as exc:
        return 1, 1, f"{type(exc).__name__}: {exc}"
    return None


def load(data: bytes) -> Notebook:
    """Read a notebook's bytes. Raises :class:`NotebookError` when they are not one."""
    text = _decode_bytes(data)
    try:
        nb, spans = _scan(text)
    except RecursionError:
        raise NotebookError("nested too deeply") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError("not a Jupyter notebook (no 'cells' list; nbformat 4 is supported)")
    language = _language(nb)
    python = language is None or language in ("python", "python3", "ipython", "ipython3")
    cells: list[CodeCell] = []
    parts: list[str] = []
    line = 1
    for pos, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        original = _cell_source(cell.get("source"))
        code = original if original.endswith("\n") or not original else original + "\n"
        code, blanked, shifts = blank_magics(code)
        cc = CodeCell(pos + 1, original, code, blanked, shifts)
        err = _syntax_error(code) if code.strip() else None
        if err is not None:
            cc.syntax_error = err
            cc.code = "\n" * code.count("\n")
        if cells:
            parts.append(MARKER.format(index=pos + 1) + "\n")
            line += 1
        cc.start_line = line
        parts.append(cc.code)
        line += cc.line_count
        cells.append(cc)
    return Notebook(cells, "".join(parts), spans, text, python)


# -- linting -----------------------------------------------------------------------------------
def _map_position(nb: Notebook, line: int, column: int) -> tuple[int, int, int] | None:
    hit = nb.locate(line)
    if hit is None:
        return None
    cell, rel = hit
    return cell.index, rel, column + cell.shifts.get(rel - 1, 0)


_LINE_REF = re.compile(r"\bline (\d+)\b")


def _line_ref(nb: Notebook, cell: int, m: re.Match) -> str:
    """A ``line N`` of a rule's message (a line of the virtual module) in notebook terms."""
    hit = nb.locate(int(m.group(1)))
    if hit is None:
        return m.group(0)
    other, rel = hit
    return f"line {rel}" if other.index == cell else f"line {rel} of cell {other.index}"


def map_finding(nb: Notebook, finding: Finding, path: str) -> Finding:
    """``finding`` (positions in the virtual module) with cell-relative positions."""
    finding.path = path
    start = _map_position(nb, finding.line, finding.column)
    if start is None:
        return finding
    cell, line, column = start
    finding.message = _LINE_REF.sub(lambda m: _line_ref(nb, cell, m), finding.message)
    end = _map_position(nb, finding.end_line or finding.line, finding.end_column or finding.column)
    finding.cell = cell
    finding.line, finding.column = line, column
    if end is not None and end[0] == cell:
        finding.end_line, finding.end_column = end[1], end[2]
    else:
        finding.end_line, finding.end_column = line, column
    finding.statement_lines = None
    finding.raw_region = _raw_region(nb, finding)
    if finding.fix is not None:
        edits = []
        for e in finding.fix.edits:
            a = _map_position(nb, e.start_line, e.start_column)
            b = _map_position(nb, e.end_line, e.end_column)
            if a is None or b is None or a[0] != cell or b[0] != cell:
                edits = None
                break
            edits.append(Edit(a[1], a[2], b[1], b[2], e.content))
        finding.fix = Fix(finding.fix.description, finding.fix.applicability, tuple(edits)) if edits is not None else None
    return finding


def _syntax_finding(nb: Notebook, path: str, cell: CodeCell) -> Finding:
    from torch_audit.catalog import load_catalog

    rule = load_catalog(("static",))["syntax-error"]
    line, column, detail = cell.syntax_error  # type: ignore[misc]
    finding = Finding(code=rule.code, name=rule.name, severity=rule.severity,
                      message=rule.message.format(detail=detail), path=path,
                      line=max(1, line), column=max(1, column), cell=cell.index)
    finding.raw_region = _raw_region(nb, finding)
    return finding


def _unreadable(path: str, reason: str) -> Finding:
    from torch_audit.catalog import load_catalog

    rule = load_catalog(("static",))["unreadable-file"]
    return Finding(code=rule.code, name=rule.name, severity=rule.severity,
                   message=rule.message.format(reason=reason), path=path)


def lint_notebook(path: str, data: bytes, settings: Any) -> Any:
    """The :class:`~torch_audit.lint.engine.FileResult` of a notebook's bytes."""
    from torch_audit.lint.engine import FileResult, lint_python, mentions_trigger

    result = FileResult(path)
    if len(data) > MAX_NOTEBOOK_BYTES:
        result.notes.append(f"{path}: skipped, {len(data) / 2**20:.1f} MB is over the notebook size limit")
        result.skipped = True
        return result
    if not mentions_trigger(data, settings.triggers):
        result.skipped = True
        return result
    try:
        nb = load(data)
    except NotebookError as exc:
        result.findings.append(_unreadable(path, f"not a readable notebook: {exc}"))
        return result
    if not nb.python:
        result.skipped = True
        return result
    vdata = nb.source.encode("utf-8")
    errors = [_syntax_finding(nb, path, c) for c in nb.cells if c.syntax_error is not None]
    if not mentions_trigger(vdata, settings.triggers):
        result.findings = errors
        result.skipped = not errors
        return result
    inner = lint_python(path, vdata, settings)
    result.notes = inner.notes
    result.internal_errors = inner.internal_errors
    result.tracebacks = inner.tracebacks
    result.deps = inner.deps  # the local modules its code read: a cached result is stale when they change
    result.skipped = inner.skipped and not errors
    result.findings = sorted(
        [map_finding(nb, f, path) for f in inner.findings] + errors,
        key=lambda f: (f.cell or 0, f.line, f.column, f.code, f.message),
    )
    return result


# -- positions in the raw file -----------------------------------------------------------------
def _escaped_length(text: str, ensure_ascii: bool) -> int:
    return len(json.dumps(text, ensure_ascii=ensure_ascii)) - 2


def _raw_offset(nb: Notebook, cell_index: int, line: int, column: int) -> int | None:
    span = nb.spans.get(cell_index - 1)
    if span is None or not span.strings:
        return None
    # character offset of (line, column) in the cell's source
    source = "".join(s for _, s in span.strings)
    lines = source.splitlines(keepends=True) or [""]
    if line > len(lines):
        line, column = len(lines), len(lines[-1].rstrip("\r\n")) + 1
    offset = sum(len(s) for s in lines[: line - 1]) + column - 1
    ensure_ascii = _ensure_ascii(nb.text)
    for start, value in span.strings:
        if offset < len(value):
            return start + 1 + _escaped_length(value[:offset], ensure_ascii)
        offset -= len(value)
    start, value = span.strings[-1]
    return start + 1 + _escaped_length(value, ensure_ascii)


def _raw_point(nb: Notebook, cell: int, line: int, column: int) -> tuple[int, int] | None:
    """The (line, column) in the ``.ipynb`` text of a position in a cell."""
    offset = _raw_offset(nb, cell, line, column)
    if offset is None:
        return None
    raw_line = nb.text.count("\n", 0, offset) + 1
    raw_col = offset - (nb.text.rfind("\n", 0, offset) + 1) + 1
    return raw_line, raw_col


def _raw_region(nb: Notebook, finding: Finding) -> tuple[int, int, int, int] | None:
    """(line, column, end line, end column) of a cell-relative finding in the raw file."""
    if finding.cell is None:
        return None
    start = _raw_point(nb, finding.cell, finding.line, finding.column)
    if start is None:
        return None
    end = _raw_point(nb, finding.cell, finding.end_line or finding.line, finding.end_column or finding.column) or start
    if end < start:
        end = start
    return (*start, *end)


def raw_position(path: str, cell: int, line: int, column: int) -> tuple[int, int] | None:
    """The (line, column) in the ``.ipynb`` file at ``path`` of a position in a cell, or None
    when the file cannot be read. (Findings carry theirs: ``Finding.raw_region``.)"""
    try:
        with open(path, "rb") as fh:
            nb = load(fh.read())
    except (OSError, NotebookError):
        return None
    return _raw_point(nb, cell, line, column)


# -- fixing ------------------------------------------------------------------------------------
def split_cells(nb: Notebook, source: str) -> list[str]:
    """Split a (fixed) virtual module back into the code of each code cell."""
    pieces: list[list[str]] = [[]]
    markers: list[int] = []
    for line in source.splitlines(keepends=True):
        m = _MARKER_RE.match(line.rstrip("\n"))
        if m:
            markers.append(int(m.group(1)))
            pieces.append([])
        else:
            pieces[-1].append(line)
    if markers != [c.index for c in nb.cells[1:]]:
        raise ValueError("the fixed code no longer has the notebook's cell boundaries")
    return ["".join(p) for p in pieces] if nb.cells else []


def _restore(cell: CodeCell, new_code: str) -> str:
    """The new stored source of a cell: ``new_code`` with the blanked IPython lines put back."""
    old = cell.code.splitlines(keepends=True)
    new = new_code.splitlines(keepends=True)
    orig = (cell.original if cell.original.endswith("\n") or not cell.original else cell.original + "\n")
    orig_lines = orig.splitlines(keepends=True)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out.extend(orig_lines[i1:i2])
            continue
        if any(i in cell.blanked for i in range(i1, i2)):
            raise ValueError(f"a fix touches IPython syntax in cell {cell.index}")
        out.extend(new[j1:j2])
    text = "".join(out)
    if not cell.original.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text


def _ensure_ascii(text: str) -> bool:
    return text.isascii() and "\\u" in text


def _serialise(text: str, span: _SourceSpan, new_source: str) -> str:
    ensure_ascii = _ensure_ascii(text)
    if not span.is_list:
        return json.dumps(new_source, ensure_ascii=ensure_ascii)
    lines = new_source.splitlines(keepends=True)
    items = [json.dumps(s, ensure_ascii=ensure_ascii) for s in lines]
    if not items:
        return "[]"
    if span.strings:
        first_start = span.strings[0][0]
        lead = text[span.start + 1 : first_start]
        _, last_end = scanstring(text, span.strings[-1][0] + 1, True)
        trail = text[last_end : span.end - 1]
        if len(span.strings) > 1:
            _, first_end = scanstring(text, first_start + 1, True)
            sep = text[first_end : span.strings[1][0]]
        else:
            sep = "," + lead
    else:
        lead, sep, trail = "", ", ", ""
    return "[" + lead + sep.join(items) + trail + "]"


def apply_cell_edits(original: bytes, new_python_source: str) -> bytes:
    """The notebook ``original`` with its code cells replaced by the cells of
    ``new_python_source`` (a fixed version of ``load(original).source``).

    Only the ``source`` of cells whose code changed is rewritten, in the notebook's own JSON
    style; outputs, metadata, execution counts and every other byte stay as they were. Raises
    ValueError when the new source cannot be mapped back (cell boundaries or IPython lines
    touched)."""
    nb = load(original)
    pieces = split_cells(nb, new_python_source)
    replacements: list[tuple[int, int, str]] = []
    for cell, new_code in zip(nb.cells, pieces):
        if new_code == cell.code:
            continue
        if cell.syntax_error is not None:
            raise ValueError(f"cell {cell.index} has a syntax error and cannot be fixed")
        span = nb.spans.get(cell.index - 1)
        if span is None:
            raise ValueError(f"cannot locate the source of cell {cell.index}")
        new_source = _restore(cell, new_code)
        if new_source == cell.original:
            continue
        replacements.append((span.start, span.end, _serialise(nb.text, span, new_source)))
    if not replacements:
        return original
    text = nb.text
    for start, end, content in sorted(replacements, reverse=True):
        text = text[:start] + content + text[end:]
    bom = "\ufeff" if original.startswith(b"\xef\xbb\xbf") else ""
    return (bom + text).encode("utf-8")
