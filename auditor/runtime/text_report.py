"""The runtime's text report (``session.report()``, the integrations' logs and summaries): the
linter's finding lines (:func:`torch_audit.report._text.finding_line`, with the runtime facts
as ``(module: …, step: …, seen Nx)``) and its ``= help:`` lines, in root-cause-first order,
then a summary line and the session's notes. One renderer for both passes: only the order (a
chain of non-finite findings, root cause first) and the summary are the runtime's own.

Torch-free (it formats findings only).
"""

from __future__ import annotations

from typing import Iterable

from torch_audit.findings import Finding

__all__ = ["finding_line", "format_text"]


def finding_line(finding: Finding) -> str:
    """One finding on one line, as ``torch-audit lint`` and ``torch-audit run`` print it:
    ``path:line:col: CODE message (module: …, step: …)``."""
    from torch_audit.report._text import finding_line as lint_finding_line

    return lint_finding_line(finding)


def format_text(findings: Iterable[Finding], notes: Iterable[str] = ()) -> str:
    """The report: a line per finding (with ``  = help: …`` under it when there is help), a
    summary line and the notes. A chain of non-finite findings is listed root cause first, the
    others marked as its follow-ons (:mod:`torch_audit.runtime.causes`)."""
    from torch_audit.report._text import help_lines
    from torch_audit.runtime.causes import root_cause_first

    findings = list(findings)
    lines = []
    for f in root_cause_first(findings):
        lines.append(finding_line(f))
        lines.extend(help_lines(f))
    n = len(findings)
    lines.append("No runtime findings." if n == 0 else f"Found {n} runtime finding{'s' if n != 1 else ''}.")
    lines.extend(f"Note: {note}." for note in notes)
    return "\n".join(lines)
