"""The CI recipe of docs/ci.md: the workflow file is valid and its commands work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "github-workflow.yml"


def steps():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(WORKFLOW.read_text())
    return data, {name: job["steps"] for name, job in data["jobs"].items()}


def test_workflow_shape():
    data, jobs = steps()
    assert set(jobs) == {"lint", "smoke", "pytest"}
    assert data["jobs"]["lint"]["permissions"]["security-events"] == "write"
    uses = [s.get("uses", "") for s in jobs["lint"]]
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    upload = next(s for s in jobs["lint"] if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    lint = next(s for s in jobs["lint"] if "torch-audit lint" in s.get("run", ""))
    assert upload["with"]["sarif_file"] in lint["run"]
    assert "cancelled()" in upload["if"]  # uploaded also when lint found something
    smoke = " ".join(s.get("run", "") for s in jobs["smoke"])
    assert "torch-audit run --max-steps" in smoke


def test_lint_command_writes_sarif(run_cli, tmp_path):
    _, jobs = steps()
    lint = next(s for s in jobs["lint"] if "torch-audit lint" in s.get("run", ""))["run"]
    args = lint.split()[1:]
    shutil.copy(ROOT / "fixtures" / "examples" / "train.py", tmp_path / "train.py")
    proc = run_cli(*args)
    assert proc.returncode in (0, 1), proc.stderr
    sarif = json.loads((tmp_path / "torch-audit.sarif").read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]


def test_smoke_command_stops_after_max_steps(run_cli, tmp_path):
    pytest.importorskip("torch")
    _, jobs = steps()
    run = next(s for s in jobs["smoke"] if "torch-audit run" in s.get("run", ""))["run"]
    args = run.split()[1:]
    assert args[args.index("--max-steps") + 1] == "20"
    args[args.index("--max-steps") + 1] = "2"
    shutil.copy(ROOT / "fixtures" / "examples" / "train.py", tmp_path / "train.py")
    proc = run_cli(*args, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr  # 1: the example's planted bugs were found
    sarif = json.loads((tmp_path / "torch-audit-run.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    assert (tmp_path / "torch-audit-run.html").stat().st_size > 0


def test_workflow_never_installs_the_unrelated_package_of_the_same_name():
    """`pip install torch-audit` installs another project (README, Install)."""
    import re

    installs = [line for line in WORKFLOW.read_text().splitlines() if re.match(r"\s*(- run: )?pip install", line)]
    ours = [line for line in installs if "torch-audit" in line]
    assert len(ours) == 3
    assert all(re.search(r"torch-audit(\[runtime\])? @ git\+", line) for line in ours), ours
