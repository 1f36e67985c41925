"""The runtime auditor: ``torch_audit.audit()`` and the machinery behind it.

Importing this package does not import torch; :mod:`torch_audit.runtime.session` does.
Runtime checks live in ``torch_audit.rules.runtime`` (one per module) and derive from
:class:`torch_audit.runtime.check.RuntimeCheck`.
"""

from __future__ import annotations

from typing import Any

from torch_audit.runtime.errors import AuditError, AuditFailure, RuntimeExtraMissing, SessionActiveError

__all__ = ["AuditError", "AuditFailure", "RuntimeExtraMissing", "SessionActiveError", "audit",
           "AuditSession"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "AuditSession"):
        try:
            from torch_audit.runtime import session
        except ModuleNotFoundError as exc:
            from torch_audit.runtime.errors import RuntimeExtraMissing, is_torch_missing

            if is_torch_missing(exc):
                raise RuntimeExtraMissing(f"torch_audit.runtime.{name}") from None
            raise
        return getattr(session, name)
    raise AttributeError(f"module 'torch_audit.runtime' has no attribute {name!r}")
