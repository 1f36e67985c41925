"""Thin adapters of the runtime session to the places people train and test.

- :mod:`torch_audit.integrations.lightning`: ``AuditCallback`` for a Lightning ``Trainer``;
- :mod:`torch_audit.integrations.transformers`: ``AuditCallback`` for a Hugging Face ``Trainer``;
- :mod:`torch_audit.integrations.pytest_plugin`: the ``torch_audit`` fixture and marker
  (registered as a pytest plugin through the ``pytest11`` entry point).

Each module imports its framework only when used; none of them is imported by the linter.
"""

from __future__ import annotations

from torch_audit.integrations.session_owner import FAIL_LEVELS, at_or_above, summarise

__all__ = ["FAIL_LEVELS", "at_or_above", "summarise"]
