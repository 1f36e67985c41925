"""The order every format lists findings in."""

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
