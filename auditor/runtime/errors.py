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


#: what to do when torch is missing (the README's install section says the same)
RUNTIME_EXTRA_HINT = ("install the runtime extra (`pip install '.[runtime]'` in a clone of "
                      "torch-audit) or torch itself (`pip install torch`)")


class RuntimeExtraMissing(ImportError):
    """The runtime auditor needs torch, and it is not installed (the lint-only install).

    An ``ImportError``, so that ``except ImportError`` and ``pytest.importorskip``-style code
    treat it as the missing dependency it is."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs torch, which is not installed: {RUNTIME_EXTRA_HINT}",
                         name="torch")


def is_torch_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says that torch itself cannot be imported (not a broken import inside it)."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torch"
