"""Pytest fixtures of the runtime tests. The helpers they share with the static tests live in
``tests/harness.py`` and are imported from there (``from harness import run_fixture``); the
names below are kept for the modules that still import them from here."""

from __future__ import annotations

import pytest

from harness import ALL_CHECKS, RUNTIME_FIXTURES as FIXTURES, expected_codes, run_fixture  # noqa: F401
from harness import runtime_fixture_dirs as fixture_dirs  # noqa: F401


@pytest.fixture(autouse=True)
def _no_leftover_session():
    from torch_audit.runtime.session import active_session

    assert active_session() is None
    yield
    assert active_session() is None
