"""The TOML parser: ``tomllib`` from Python 3.11, the ``tomli`` backport before it (a dependency
there, see pyproject.toml). The parser is imported when asked for, not with this module: a run
that parses no TOML never loads one."""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["toml_parser"]


def toml_parser() -> ModuleType:
    """``tomllib``, or ``tomli`` on Python 3.10 (same API)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib
