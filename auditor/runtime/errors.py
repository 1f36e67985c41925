"""Typed exceptions of the runtime auditor (importable without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.findings import Finding


class AuditError(Exception):
    """Base class of every exception the runtime auditor raises on purpose."""


class SessionActiveError(AuditError, RuntimeError):
    """An audit session is already active (sessions are neither re-entrant nor concurrent)."""


class AuditFailure(AuditError):
    """Raised with ``fail_fast=True`` on the first error-severity finding.

    ``finding`` is the :class:`~torch_audit.findings.Finding` that triggered it."""

    def __init__(self, finding: "Finding") -> None:
        self.finding = finding
        where = f" (step {finding.step})" if finding.step is not None else ""
        super().__init__(f"{finding.code} [{finding.name}]{where}: {finding.message}")
