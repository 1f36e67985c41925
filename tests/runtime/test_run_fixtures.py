"""Every runtime check's fixtures through `torch-audit run`'s own path (configuration → selection
→ script runner → session → findings), in-process to stay fast; one real subprocess proves the
command line gives the same codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import RUNTIME_FIXTURES as RUNTIME, expected_codes, runtime_selection
from torch_audit.runtime.audited_run import audit_script
from torch_audit.runtime.run_command import resolve_settings

SCRIPTS = sorted(p for p in RUNTIME.glob("*/*.py") if p.name in ("bad.py", "good.py") or p.name.startswith("trap_"))


def expected(path: Path) -> set[str]:
    """bad.py gives the codes of its `# expect:` line; good.py and the traps are silent."""
    return expected_codes(path) if path.name == "bad.py" else set()


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_gives_expected_codes(path, capsys):
    settings = resolve_settings({"select": tuple(runtime_selection(path)), "preview": True}, path)
    # as `torch-audit run` does: the session gets the resolved selection itself
    outcome = audit_script(str(path), selection=settings.selection, every=settings.every,
                           fail_fast=settings.fail_fast)
    assert outcome.exception is None, outcome.exception
    assert outcome.status == 0
    got = {f.code for f in outcome.findings}
    assert got == expected(path), [f"{f.code} {f.message}" for f in outcome.findings]
    for f in outcome.findings:  # runtime findings point at source when they name a module class
        if f.path:
            assert os.path.exists(f.path) and f.line >= 1


def test_command_line_gives_the_same_codes(tmp_path):
    bad = RUNTIME / "nonfinite_activation" / "bad.py"
    result = subprocess.run(
        [sys.executable, "-m", "torch_audit", "run", "--output-format", "github", str(bad)],
        cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 1, result.stderr
    codes = set(re.findall(r"title=(TA\d{3})", result.stdout))
    assert codes == expected(bad)
    # the non-finite activation is annotated on the custom module's class, in the script
    assert re.search(rf"::error file={re.escape(str(bad))},line=7,.*title=TA704", result.stdout)
