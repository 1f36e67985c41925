"""The bundled example behind the README's first command: real findings from both passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "fixtures" / "examples" / "train.py"


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "torch_audit", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def test_readme_main_command_lints_the_example():
    out = cli("lint", "--no-cache", "fixtures/examples")
    assert out.returncode == 1
    for code in ("TA101", "TA201", "TA301", "TA304", "TA309"):
        assert f" {code} " in out.stdout, (code, out.stdout)


def test_example_script_runs_under_the_runtime_auditor():
    out = cli("run", "--max-steps", "6", str(EXAMPLE), "--epochs", "1")
    assert out.returncode == 1, out.stderr  # runtime errors found; the script itself succeeded
    assert "TA804" in out.stderr, "gradients are never cleared"
    assert "TA707" in out.stderr, "CrossEntropyLoss receives probabilities"
    assert "Traceback" not in out.stderr
