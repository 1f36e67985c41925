"""The order every format lists findings in: by position (:func:`ordered`); for people and
scripts reading a list (``text``, ``full``, ``json``), non-finite runtime findings root cause
first (:func:`root_cause_first`)."""

from __future__ import annotations

from typing import Iterable

from torch_audit.findings import Finding


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in a stable order: by path, position, code, then runtime step and module."""
    return sorted(
        findings,
        key=lambda f: (
            f.path,
            f.cell or 0,
            f.line,
            f.column,
            f.code,
            f.step if f.step is not None else -1,
            f.module or "",
            f.message,
        ),
    )


def is_runtime(finding: Finding) -> bool:
    return finding.module is not None or finding.step is not None


def root_cause_first(findings: Iterable[Finding]) -> list[Finding]:
    """:func:`ordered`, then each chain of non-finite runtime findings (a NaN activation, the
    loss, the gradients and parameters it made) listed root cause first, its follow-ons marked
    "(follow-on of TA704 at step 3)" in their message, as the HTML report and
    ``session.report()`` list them (``torch_audit.runtime.causes``, torch-free). Lint findings
    keep the order of :func:`ordered`."""
    out = ordered(findings)
    if any(is_runtime(f) for f in out):
        from torch_audit.runtime.causes import root_cause_first as chained

        out = chained(out)
    return out
