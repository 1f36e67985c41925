"""The runtime auditor: ``torch_audit.audit()`` and the machinery behind it.

Importing this package does not import torch; :mod:`torch_audit.runtime.session` does.
Runtime checks live in ``torch_audit.rules.runtime`` (one per module) and derive from
:class:`torch_audit.runtime.check.RuntimeCheck`.
"""

from __future__ import annotations

from typing import Any

from torch_audit.runtime.errors import AuditError, AuditFailure, SessionActiveError

__all__ = ["AuditError", "AuditFailure", "SessionActiveError", "audit", "AuditSession"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "AuditSession"):
        from torch_audit.runtime import session

        return getattr(session, name)
    raise AttributeError(f"module 'torch_audit.runtime' has no attribute {name!r}")
