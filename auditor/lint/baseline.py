"""Baseline files: record today's findings, report only the ones that are new.

``lint --write-baseline FILE`` writes every current finding; ``lint --baseline FILE`` hides the
findings the file records. An entry is keyed by the rule code, the file's path relative to the
project root (POSIX separators) and a hash of the finding's source line with its context (the
line and the nearest non-blank lines above and below, whitespace removed), never by a line
number: code that moves, or lines added above it, does not bring a baselined finding back. A
line that carries several findings of one rule is recorded with a ``count``; a new one on that
line (a count above the recorded one) is reported.

The file is JSON with a ``version`` field; a missing or malformed file is one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from torch_audit.findings import Finding

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.options import LintOptions

VERSION = 1
#: Findings of these rules are never recorded: they are the tool's own failures, not the code's.
NEVER_BASELINED = frozenset({"internal-error"})


class BaselineError(Exception):
    """A baseline file that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Key:
    code: str
    path: str
    fingerprint: str


def _normalise(line: str) -> str:
    # All whitespace removed: re-indenting or re-spacing a line (a formatter) keeps its key.
    return "".join(line.split())


def fingerprint(lines: list[str], line: int) -> str:
    """Hash of the 1-based ``line`` of ``lines`` and of the nearest non-blank lines around it."""
    index = line - 1
    current = _normalise(lines[index]) if 0 <= index < len(lines) else ""
    before = next((n for n in (_normalise(x) for x in reversed(lines[: max(index, 0)])) if n), "")
    after = next((n for n in (_normalise(x) for x in lines[index + 1 :]) if n), "")
    digest = hashlib.sha256("\n".join((before, current, after)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


class SourceLines:
    """The lines findings point at: of a file, or of a notebook cell (``Finding.cell``)."""

    def __init__(self, read: Callable[[str], bytes | None] | None = None) -> None:
        self._read = read or _read_file
        self._files: dict[str, list[str] | None] = {}
        self._cells: dict[str, dict[int, list[str]] | None] = {}

    def of(self, finding: Finding) -> list[str]:
        if finding.cell is not None:
            cells = self._notebook(finding.path)
            return (cells or {}).get(finding.cell, [])
        if finding.path not in self._files:
            data = self._read(finding.path)
            self._files[finding.path] = _text_lines(data) if data is not None else None
        return self._files[finding.path] or []

    def _notebook(self, path: str) -> dict[int, list[str]] | None:
        if path not in self._cells:
            from torch_audit.lint.notebook import NotebookError, load

            data = self._read(path)
            try:
                nb = load(data) if data is not None else None
            except NotebookError:
                nb = None
            self._cells[path] = (
                {c.index: _split_lines(c.original) for c in nb.cells} if nb is not None else None
            )
        return self._cells[path]


def _read_file(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _text_lines(data: bytes) -> list[str]:
    from torch_audit.lint.engine import decode

    try:
        text, _ = decode(data)
    except ValueError:
        text = data.decode("utf-8", "replace")
    return _split_lines(text)


def _split_lines(text: str) -> list[str]:
    # the parser's line breaks (str.splitlines would also break at a form feed)
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def keys(findings: Iterable[Finding], relative: Callable[[str], str], sources: SourceLines) -> list[Key]:
    return [Key(f.code, relative(f.path), fingerprint(sources.of(f), f.line)) for f in findings]


def render(findings: list[Finding], relative: Callable[[str], str], sources: SourceLines, version: str) -> str:
    """The JSON text of a baseline recording ``findings``."""
    counts: dict[Key, int] = {}
    names: dict[str, str] = {}
    for f, key in zip(findings, keys(findings, relative, sources)):
        if f.name in NEVER_BASELINED:
            continue
        counts[key] = counts.get(key, 0) + 1
        names[f.code] = f.name
    entries = [
        {"code": k.code, "name": names[k.code], "path": k.path, "fingerprint": k.fingerprint, "count": n}
        for k, n in sorted(counts.items(), key=lambda item: (item[0].path, item[0].code, item[0].fingerprint))
    ]
    data = {"version": VERSION, "generator": f"torch-audit {version}", "findings": entries}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def load(path: Path) -> dict[Key, int]:
    """The entries of a baseline file. Raises :class:`BaselineError` with a one-line reason."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{where}: baseline file not found (create it with --write-baseline)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{where}: cannot read the baseline: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{where}: not a baseline file: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict) or "version" not in data:
        raise BaselineError(f"{where}: not a baseline file (no version field)")
    if data["version"] != VERSION:
        raise BaselineError(
            f"{where}: baseline version {data['version']!r} is not supported (expected {VERSION}); "
            "write it again with --write-baseline"
        )
    entries = data.get("findings")
    if not isinstance(entries, list):
        raise BaselineError(f"{where}: not a baseline file (no findings list)")
    out: dict[Key, int] = {}
    for i, entry in enumerate(entries):
        try:
            key = Key(str(entry["code"]), str(entry["path"]), str(entry["fingerprint"]))
            count = entry.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ValueError
        except (TypeError, KeyError, ValueError, AttributeError):
            raise BaselineError(f"{where}: entry {i + 1} is malformed (needs code, path, fingerprint, count)") from None
        out[key] = out.get(key, 0) + count
    return out


def new_findings(
    findings: list[Finding], baseline: dict[Key, int], relative: Callable[[str], str], sources: SourceLines
) -> tuple[list[Finding], int]:
    """The findings the baseline does not cover, and how many it covered. Of several findings
    sharing one key, the first ``count`` (in source order) are covered."""
    left = dict(baseline)
    kept: list[Finding] = []
    covered = 0
    ordered = sorted(findings, key=lambda f: f.sort_key)
    for f, key in zip(ordered, keys(ordered, relative, sources)):
        if f.name not in NEVER_BASELINED and left.get(key, 0) > 0:
            left[key] -= 1
            covered += 1
        else:
            kept.append(f)
    return kept, covered


def apply_baseline_options(
    findings: list[Finding],
    options: "LintOptions",
    *,
    root: Path,
    relative: Callable[[str, Path], str],
    read: Callable[[str], bytes | None] | None = None,
) -> tuple[list[Finding], int | None]:
    """``--write-baseline`` (returns the exit code: the run ends there) and ``--baseline``
    (returns the findings it does not cover, and None: the run goes on to report them)."""
    from torch_audit import __version__
    from torch_audit.output import EXIT_ERROR, EXIT_OK, OutputError, message, write_output

    def rel(path: str) -> str:
        return relative(path, root)

    sources = SourceLines(read)
    target = options.write_baseline
    if target:
        try:
            write_output(render(findings, rel, sources, __version__), target)
        except OutputError as exc:
            message(str(exc), "error")
            return findings, EXIT_ERROR
        recorded = sum(1 for f in findings if f.name not in NEVER_BASELINED)
        if not options.quiet:
            message(f"wrote {recorded} finding(s) to the baseline {target}")
        return findings, EXIT_OK
    try:
        baseline = load(Path(options.baseline))  # type: ignore[arg-type]
    except BaselineError as exc:
        message(str(exc), "error")
        return findings, EXIT_ERROR
    kept, covered = new_findings(findings, baseline, rel, sources)
    if covered and not options.quiet:
        message(f"{covered} finding(s) recorded in {options.baseline} not shown", "note")
    return kept, None
