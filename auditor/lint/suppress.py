"""Suppression comments.

- ``# torch-audit: ignore[TA101, softmax-before-cross-entropy]`` on any line of the reported
  statement; a bare ``# torch-audit: ignore`` suppresses everything there.
- ``# noqa: TA101`` (codes only) for habit; a bare ``# noqa`` is left to other tools and ignored,
  so that a flake8 ``noqa`` never silences torch-audit by accident.
- ``# torch-audit: ignore-file[...]`` (or bare ``ignore-file``) in the first lines of a file.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize

from torch_audit.findings import Finding

_DIRECTIVE = re.compile(
    r"torch-audit\s*:\s*(?P<kind>ignore-file|ignore)\b\s*(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE
)
_NOQA = re.compile(r"\bnoqa\s*:\s*(?P<codes>[A-Za-z0-9_,\s-]+)", re.IGNORECASE)
#: ``ignore-file`` is honoured only in the file's first lines, like a module header.
FILE_DIRECTIVE_LINES = 30

ALL = "*"


@dataclasses.dataclass
class Suppression:
    line: int
    column: int
    kind: str  # ignore | ignore-file | noqa
    selectors: tuple[str, ...]  # ("*",) for a bare directive
    used: set[str] = dataclasses.field(default_factory=set)

    def matches(self, finding: Finding) -> bool:
        if ALL in self.selectors:
            return True
        return finding.code.upper() in self.selectors or finding.name.lower() in self.selectors


def _split(codes: str | None) -> tuple[str, ...]:
    if codes is None:
        return (ALL,)
    items = tuple(c.strip() for c in codes.split(",") if c.strip())
    return tuple(c.upper() if re.fullmatch(r"[A-Za-z]+[0-9]+", c) else c.lower() for c in items) or (ALL,)


def _comments(source: str) -> list[tuple[int, int, str]]:
    """(line, column, text) of every comment; tokenize keeps ``#`` in strings out."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out.append((tok.start[0], tok.start[1] + 1, tok.string))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        # Tokenising a broken file fails part-way; fall back to a line scan.
        out = []
        for i, line in enumerate(source.splitlines(), 1):
            pos = line.find("#")
            if pos >= 0:
                out.append((i, pos + 1, line[pos:]))
    return out


def parse_suppressions(source: str) -> list[Suppression]:
    if "torch-audit" not in source and "noqa" not in source.lower():
        return []
    found = []
    for line, col, text in _comments(source):
        for m in _DIRECTIVE.finditer(text):
            kind = m.group("kind").lower()
            if kind == "ignore-file" and line > FILE_DIRECTIVE_LINES:
                continue
            found.append(Suppression(line, col, kind, _split(m.group("codes"))))
        m = _NOQA.search(text)
        if m:
            codes = tuple(
                c for c in _split(m.group("codes")) if re.fullmatch(r"TA[0-9]{3}", c)
            )
            if codes:
                found.append(Suppression(line, col, "noqa", codes))
    return found


def apply_suppressions(
    findings: list[Finding], suppressions: list[Suppression]
) -> list[Finding]:
    """The findings no suppression covers. Marks each suppression's use as a side effect."""
    if not suppressions:
        return findings
    by_line: dict[int, list[Suppression]] = {}
    file_level = []
    for s in suppressions:
        if s.kind == "ignore-file":
            file_level.append(s)
        else:
            by_line.setdefault(s.line, []).append(s)
    kept = []
    for f in findings:
        first, last = f.statement_lines or (f.line, f.end_line or f.line)
        hit = None
        for s in file_level:
            if s.matches(f):
                hit = s
                break
        if hit is None:
            for line in range(first, last + 1):
                for s in by_line.get(line, ()):
                    if s.matches(f):
                        hit = s
                        break
                if hit:
                    break
        if hit is None:
            kept.append(f)
        else:
            hit.used.add(f.code)
    return kept
