"""Pytest fixtures of the runtime tests. The helpers they share with the static tests live in
``tests/harness.py`` and are imported from there (``from harness import run_fixture``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_leftover_session():
    from torch_audit.runtime.session import active_session

    assert active_session() is None
    yield
    assert active_session() is None
