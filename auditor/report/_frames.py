"""Source frames of the ``full`` format, as Ruff prints them: the finding's line under a gutter,
carets under its span, the code after the carets.

```
  |
7 |     return F.cross_entropy(probs, y)
  |            ^^^^^^^^^^^^^^^^^^^^^^^^^ TA101
  |
```

Files are read once per render, decoded as the linter decodes them (PEP 263 cookie, BOM); a
notebook finding shows the line of its cell. A file that cannot be read (gone, changed, a runtime
finding without a file) gets no frame, never an error."""

from __future__ import annotations

from typing import Callable

from torch_audit.findings import Finding

BLUE = "\x1b[34m"


class SourceLines:
    """Lines of the files findings point at, read on first use."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, int | None], list[str] | None] = {}

    def line(self, finding: Finding) -> str | None:
        key = (finding.path, finding.cell)
        if key not in self._files:
            self._files[key] = _read_lines(finding.path, finding.cell)
        lines = self._files[key]
        if lines is None or not 1 <= finding.line <= len(lines):
            return None
        return lines[finding.line - 1]


def _read_lines(path: str, cell: int | None) -> list[str] | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    try:
        if cell is not None:
            from torch_audit.lint.notebook import load

            for code_cell in load(data).cells:
                if code_cell.index == cell:
                    return code_cell.original.splitlines()
            return None
        from torch_audit.lint.engine import decode

        return decode(data)[0].splitlines()
    except ValueError:  # undecodable source, a broken notebook
        return None


def frame_lines(finding: Finding, source: SourceLines, style: Callable[..., str], caret_codes: tuple[str, ...]) -> list[str]:
    """The frame of ``finding``, or ``[]`` when its line cannot be shown."""
    text = source.line(finding)
    if text is None or finding.line < 1:
        return []
    text = text.rstrip("\r\n")
    start = max(1, finding.column) - 1
    if start > len(text):
        return []
    same_line = (finding.end_line or finding.line) == finding.line
    end = (finding.end_column - 1) if same_line and finding.end_column else len(text.rstrip())
    end = min(max(end, start + 1), max(len(text), start + 1))
    # the caret line copies the tabs of the source line, so that the carets stay under the span
    indent = "".join("\t" if ch == "\t" else " " for ch in text[:start])
    number = str(finding.line)
    gutter = " " * len(number)
    bar = style("|", BLUE)
    carets = style("^" * (end - start) + " " + finding.code, *caret_codes)
    return [
        f"{gutter} {bar}",
        f"{style(number, BLUE)} {bar} {text}",
        f"{gutter} {bar} {indent}{carets}",
        f"{gutter} {bar}",
    ]
