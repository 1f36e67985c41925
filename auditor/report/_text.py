"""The ``text`` format: one ``path:line:col: CODE [*] message`` line per finding and a summary,
or with ``statistics`` a per-rule count table, both modelled on Ruff.

The ``full`` format is Ruff's ``full``: each finding's line is followed by a frame of its source
line with carets under the span (``_frames``) and an ``= help:`` line (the finding's ``help``, what
to do about it); ``text`` is Ruff's ``concise``."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from torch_audit.findings import Applicability, Finding, Severity
from torch_audit.paths import display_path
from torch_audit.report._frames import SourceLines, frame_lines
from torch_audit.report._order import is_runtime, root_cause_first

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"

SEVERITY_COLOR = {Severity.ERROR: RED, Severity.WARNING: YELLOW, Severity.INFO: CYAN}


def color_wanted(stream: Any) -> bool:
    """ANSI colour for ``stream``: never with ``NO_COLOR``, always with ``FORCE_COLOR`` (any
    non-empty value, https://no-color.org and https://force-color.org), otherwise on a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def fix_is_applicable(finding: Finding, unsafe_fixes: bool) -> bool:
    """Whether ``--fix`` would apply this finding's fix (Ruff's rule: safe fixes always,
    unsafe ones only with ``--unsafe-fixes``)."""
    fix = finding.fix
    if fix is None:
        return False
    return fix.applicability == Applicability.SAFE or unsafe_fixes


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, *codes: str) -> str:
        if not self.color or not codes:
            return text
        return "".join(codes) + text + RESET


def runtime_suffix(finding: Finding) -> str:
    """`` (module: encoder.0, step: 3, seen 5x)`` for runtime findings, else ``""``."""
    if not is_runtime(finding):
        return ""
    facts = dict(finding.runtime_facts())
    labels = {"module": "module: {}", "step": "step: {}", "rank": "rank: {}", "count": "seen {}x"}
    parts = [label.format(facts[key]) for key, label in labels.items() if key in facts]
    return f" ({', '.join(parts)})" if parts else ""


def finding_line(finding: Finding, *, color: bool = False, unsafe_fixes: bool = False) -> str:
    style = _Style(color)
    sep = style(":", CYAN)
    head = ""
    if finding.path:
        cell = f"cell {finding.cell}{sep}" if finding.cell is not None else ""  # notebooks
        head = (
            f"{style(display_path(finding.path), BOLD)}{sep}{cell}{finding.line}{sep}{finding.column}{sep} "
        )
    code = style(finding.code, BOLD, SEVERITY_COLOR[finding.severity])
    marker = f" {style('[*]', CYAN)}" if fix_is_applicable(finding, unsafe_fixes) else ""
    return f"{head}{code}{marker} {finding.message}{runtime_suffix(finding)}"


def help_lines(finding: Finding, *, color: bool = False) -> list[str]:
    """``  = help: <what to do>`` for the ``full`` format; none when the finding has no help."""
    if not finding.help:
        return []
    style = _Style(color)
    first, *rest = finding.help.splitlines() or [""]
    return [f"  = {style('help', BOLD, CYAN)}: {first}", *(f"          {line}" for line in rest)]


def fix_counts(findings: list[Finding], unsafe_fixes: bool, hidden_unsafe_fixes: int) -> tuple[int, int]:
    """(fixable with ``--fix``, hidden unsafe fixes)."""
    fixable = sum(1 for f in findings if fix_is_applicable(f, unsafe_fixes))
    hidden = hidden_unsafe_fixes
    if not unsafe_fixes:
        hidden += sum(
            1 for f in findings if f.fix is not None and f.fix.applicability == Applicability.UNSAFE
        )
    return fixable, hidden


def summary_lines(
    findings: list[Finding],
    *,
    color: bool = False,
    show_fix_hint: bool = True,
    files_checked: int | None = None,
    unsafe_fixes: bool = False,
    hidden_unsafe_fixes: int = 0,
) -> list[str]:
    style = _Style(color)
    if not findings:
        line = style("All checks passed!", BOLD, GREEN)
        if files_checked is not None:
            line += f" ({plural(files_checked, 'file')} checked)"
        lines = [line]
    else:
        counts = Counter(f.severity for f in findings)
        detail = ", ".join(
            [
                plural(counts[Severity.ERROR], "error"),
                plural(counts[Severity.WARNING], "warning"),
                f"{counts[Severity.INFO]} info",
            ]
        )
        where = f" in {plural(files_checked, 'checked file')}" if files_checked is not None else ""
        lines = [f"Found {plural(len(findings), 'finding')} ({detail}){where}."]
    if show_fix_hint:
        fixable, hidden = fix_counts(findings, unsafe_fixes, hidden_unsafe_fixes)
        hidden_text = (
            f"{plural(hidden, 'hidden fix', 'hidden fixes')} can be enabled with the "
            "`--unsafe-fixes` option"
        )
        if fixable:
            line = f"{style('[*]', CYAN)} {fixable} fixable with the `--fix` option"
            lines.append(line + (f" ({hidden_text})." if hidden else "."))
        elif hidden:
            lines.append(f"No fixes available ({hidden_text}).")
    return lines


def render_text(
    findings: list[Finding],
    *,
    color: bool = False,
    show_fix_hint: bool = True,
    files_checked: int | None = None,
    unsafe_fixes: bool = False,
    hidden_unsafe_fixes: int = 0,
    show_help: bool = False,
    summary: bool = True,
) -> str:
    findings = root_cause_first(findings)
    lines = []
    source = SourceLines() if show_help else None
    for f in findings:
        lines.append(finding_line(f, color=color, unsafe_fixes=unsafe_fixes))
        if source is not None:  # full: the source frame and the help, then a blank line
            caret_codes = (BOLD, SEVERITY_COLOR[f.severity])
            lines += frame_lines(f, source, _Style(color), caret_codes)
            lines += help_lines(f, color=color)
            lines.append("")
    if summary:
        lines += summary_lines(
            findings,
            color=color,
            show_fix_hint=show_fix_hint,
            files_checked=files_checked,
            unsafe_fixes=unsafe_fixes,
            hidden_unsafe_fixes=hidden_unsafe_fixes,
        )
    return "".join(line + "\n" for line in lines)


def statistics(findings: list[Finding], *, unsafe_fixes: bool = False) -> list[dict[str, Any]]:
    """Per-rule counts, most frequent first (ties by code), as ``ruff --statistics``."""
    rows: dict[str, dict[str, Any]] = {}
    for f in findings:
        row = rows.setdefault(f.code, {"code": f.code, "name": f.name, "count": 0, "fixable": False})
        row["count"] += 1
        row["fixable"] = row["fixable"] or fix_is_applicable(f, unsafe_fixes)
    return sorted(rows.values(), key=lambda r: (-r["count"], r["code"]))


def render_statistics(findings: list[Finding], *, color: bool = False, unsafe_fixes: bool = False) -> str:
    rows = statistics(findings, unsafe_fixes=unsafe_fixes)
    if not rows:
        return ""
    style = _Style(color)
    count_width = max(len(str(r["count"])) for r in rows)
    code_width = max(len(r["code"]) for r in rows)
    any_fixable = any(r["fixable"] for r in rows)
    lines = []
    for r in rows:
        marker = ""
        if any_fixable:
            marker = (style("[*]", CYAN) if r["fixable"] else "[ ]") + " "
        code = style(r["code"].ljust(code_width), BOLD, RED)
        lines.append(f"{str(r['count']).rjust(count_width)}\t{code}\t{marker}{r['name']}")
    return "\n".join(lines) + "\n"
