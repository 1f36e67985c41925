"""Transitional alias of :mod:`torch_audit.runtime.run_command` (``torch-audit run``), kept only
while ``auditor/cli.py`` and ``tests/test_run_fixtures.py`` (owned elsewhere) import ``run``,
``audit_script`` and ``resolve_settings`` from here; delete it once they import
``torch_audit.runtime.run_command`` / ``torch_audit.runtime.audited_run``. It adds nothing."""

from __future__ import annotations

from torch_audit.runtime.audited_run import audit_script
from torch_audit.runtime.run_command import resolve_settings, run

__all__ = ["audit_script", "resolve_settings", "run"]
