"""Pytest fixtures shared by every test. The helpers the rule tests share (static and runtime
alike) live in ``tests/harness.py`` and are imported from there: ``from harness import ...``."""

import os
import sys
from pathlib import Path

import pytest

from harness import ROOT


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def run_cli(tmp_path):
    """Run the real `torch-audit` console entry in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args, cwd=None, env=None, input=None, timeout=120):
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "torch_audit", *map(str, args)],
            cwd=cwd or tmp_path,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
