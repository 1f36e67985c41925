"""The real `pre-commit` tool runs our `.pre-commit-hooks.yaml` against a temporary repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BAD = "import torch\nimport torch.nn.functional as F\n\n\ndef f(m, x, y):\n    return F.cross_entropy(torch.softmax(m(x), 1), y)\n"
GOOD = "import torch\n\nx = torch.zeros(3)\n"


def notebook(source: str) -> str:
    import json

    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": source.splitlines(keepends=True)}
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"})


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory):
    """A committed snapshot of this checkout (pre-commit installs hooks from a git revision)."""
    dest = tmp_path_factory.mktemp("hookrepo") / "torch-audit"
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".torch_audit_cache", ".pytest_cache")
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "snapshot")
    return dest


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory):
    return tmp_path_factory.mktemp("pre-commit-home")


def run_pre_commit(project: Path, hook_repo: Path, home: Path):
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "torch-audit"],
        cwd=project, capture_output=True, text=True, env=env, timeout=900,
    )


@pytest.fixture
def project(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text("x\n")
    _git(tmp_path, "add", "README.md")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


@pytest.mark.slow
def test_pre_commit_hook(project, hook_repo, pre_commit_home):
    (project / "notes.txt").write_text("no python here\n")
    _git(project, "add", "notes.txt")
    no_python = run_pre_commit(project, hook_repo, pre_commit_home)
    assert no_python.returncode == 0, no_python.stdout + no_python.stderr
    assert "no files to check" in no_python.stdout.lower()

    (project / "good.py").write_text(GOOD)
    _git(project, "add", "good.py")
    good = run_pre_commit(project, hook_repo, pre_commit_home)
    assert good.returncode == 0, good.stdout + good.stderr

    (project / "bad.py").write_text(BAD)
    _git(project, "add", "bad.py")
    bad = run_pre_commit(project, hook_repo, pre_commit_home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "TA101" in bad.stdout


@pytest.mark.slow
def test_pre_commit_hook_honours_configured_excludes_and_checks_notebooks(project, hook_repo, pre_commit_home):
    """pre-commit names every staged file; the hook's --force-exclude keeps the configured
    excludes in force, and `jupyter` in types_or hands it notebooks."""
    (project / "torch-audit.toml").write_text('extend-exclude = ["legacy/"]\n')
    (project / "legacy").mkdir()
    (project / "legacy" / "old.py").write_text(BAD)
    _git(project, "add", "torch-audit.toml", "legacy/old.py")
    excluded = run_pre_commit(project, hook_repo, pre_commit_home)
    assert excluded.returncode == 0, excluded.stdout + excluded.stderr
    assert "TA101" not in excluded.stdout

    (project / "nb.ipynb").write_text(notebook(BAD))
    _git(project, "add", "nb.ipynb")
    bad = run_pre_commit(project, hook_repo, pre_commit_home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "nb.ipynb:cell 1:" in bad.stdout and "TA101" in bad.stdout
    assert "legacy/old.py" not in bad.stdout
