"""`--write-baseline` / `--baseline`: adopt on a legacy codebase, report only new findings;
and `--fail-on`: which severities fail the run."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from click.testing import CliRunner

from torch_audit.cli import cli
from torch_audit.findings import Finding, Severity
from torch_audit.output import fails

HEADER = "import torch\nimport torch.nn.functional as F\n\n\n"
STEP = textwrap.dedent("""\
    def step(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)
    """)
WARN = "y = F.softmax(torch.ones(3))\n"


def lint(*args, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["lint", "--no-cache", "--jobs", "1", *map(str, args)], catch_exceptions=False)
    finally:
        os.chdir(old)


def test_a_baseline_hides_recorded_findings_and_shows_new_ones(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(HEADER + STEP)
    written = lint("--write-baseline", "base.json", ".", cwd=tmp_path)
    assert written.exit_code == 0, written.output
    assert "wrote 1 finding(s) to the baseline base.json" in written.output
    data = json.loads((tmp_path / "base.json").read_text())
    assert data["version"] == 1
    [entry] = data["findings"]
    assert entry["code"] == "TA101" and entry["path"] == "pkg/a.py" and entry["count"] == 1
    assert set(entry) == {"code", "name", "path", "fingerprint", "count"}  # no line numbers

    result = lint("--baseline", "base.json", ".", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "TA101" not in result.stdout
    assert "1 finding(s) recorded in base.json not shown" in result.output

    # a new finding of another rule, and of the same rule on another line, are reported
    (tmp_path / "pkg" / "a.py").write_text(HEADER + WARN + "\n\n" + STEP.replace("step", "step2").replace("probs", "p") + "\n\n" + STEP)
    result = lint("--baseline", "base.json", ".", cwd=tmp_path)
    assert result.exit_code == 1
    assert "pkg/a.py:5:5: TA106" in result.stdout
    assert "pkg/a.py:10:12: TA101" in result.stdout
    assert "pkg/a.py:15:12" not in result.stdout  # the recorded one, moved down
    # editing a neighbouring line counts as a change of the finding's context: reported again
    (tmp_path / "pkg" / "a.py").write_text(HEADER + STEP + "z = 1\n")
    assert "pkg/a.py:7:12: TA101" in lint("--baseline", "base.json", ".", cwd=tmp_path).stdout


def test_moving_code_does_not_resurrect_baselined_findings(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(HEADER + STEP)
    assert lint("--write-baseline", "base.json", "a.py", cwd=tmp_path).exit_code == 0
    # lines added above, the function re-indented into a class and re-spaced
    moved = HEADER + "X = 1\n\n\nclass Trainer:\n" + textwrap.indent(STEP.replace("dim=1", "dim = 1"), "    ")
    path.write_text(moved)
    result = lint("--baseline", "base.json", "a.py", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    # but a change of the line itself is a new finding
    path.write_text(moved.replace("F.cross_entropy(probs, y)", "F.cross_entropy(probs, y.long())"))
    assert lint("--baseline", "base.json", "a.py", cwd=tmp_path).exit_code == 1


def test_identical_findings_are_counted(tmp_path):
    # copies of one block: each finding has the same line and neighbours (the sentinel after
    # the last copy reads like the next copy's first line)
    path = tmp_path / "a.py"
    sentinel = "def step(model, x, y):\n    pass\n"
    path.write_text(HEADER + (STEP + "\n\n") * 2 + sentinel)
    assert lint("--write-baseline", "base.json", "a.py", cwd=tmp_path).exit_code == 0
    [entry] = json.loads((tmp_path / "base.json").read_text())["findings"]
    assert entry["count"] == 2
    assert lint("--baseline", "base.json", "a.py", cwd=tmp_path).exit_code == 0
    path.write_text(HEADER + (STEP + "\n\n") * 3 + sentinel)
    result = lint("--baseline", "base.json", "a.py", cwd=tmp_path)
    assert result.exit_code == 1
    assert result.stdout.count("TA101") == 1


def test_notebook_findings_are_baselined(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": HEADER + STEP}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert lint("--write-baseline", "base.json", "n.ipynb", cwd=tmp_path).exit_code == 0
    assert lint("--baseline", "base.json", "n.ipynb", cwd=tmp_path).exit_code == 0
    nb["cells"].insert(0, {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                           "source": "import os\n"})
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert lint("--baseline", "base.json", "n.ipynb", cwd=tmp_path).exit_code == 0


def test_bad_baseline_files_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "a.py").write_text(HEADER + STEP)
    cases = {
        "missing.json": None,
        "junk.json": "{not json",
        "old.json": '{"version": 99, "findings": []}',
        "shape.json": '{"version": 1, "findings": [{"code": "TA101"}]}',
        "list.json": "[]",
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        result = lint("--baseline", name, "a.py", cwd=tmp_path)
        assert result.exit_code == 2, (name, result.output)
        [line] = [l for l in result.output.splitlines() if l.startswith("torch-audit: error:")]
        assert name in line and "Traceback" not in result.output


def test_baseline_options_exclude_each_other(tmp_path):
    result = lint("--baseline", "b.json", "--write-baseline", "c.json", ".", cwd=tmp_path)
    assert result.exit_code == 2
    assert "--baseline cannot be combined with --write-baseline" in result.output


def test_fail_on(tmp_path):
    (tmp_path / "w.py").write_text(HEADER + WARN)
    default = lint("w.py", cwd=tmp_path)
    assert default.exit_code == 1
    shown = lint("--fail-on", "error", "w.py", cwd=tmp_path)
    assert shown.exit_code == 0
    assert "w.py:5:5: TA106" in shown.stdout  # still reported
    assert lint("--fail-on", "warning", "w.py", cwd=tmp_path).exit_code == 1
    (tmp_path / "e.py").write_text(HEADER + STEP)
    assert lint("--fail-on", "error", "e.py", cwd=tmp_path).exit_code == 1
    assert lint("--fail-on", "error", "--exit-zero", "e.py", cwd=tmp_path).exit_code == 0
    assert lint("--fail-on", "fatal", "e.py", cwd=tmp_path).exit_code == 2


def test_fails_thresholds():
    info = Finding("TA634", "tensor-data-attribute", Severity.INFO, "m")
    assert fails([info], None) and fails([info], "info")
    assert not fails([info], "warning") and not fails([], None)


def test_fail_on_applies_to_what_fix_leaves(tmp_path):
    # a safe fix for the log of a softmax, a warning that has no fix
    body = "def f(x):\n    return torch.log(torch.softmax(x, dim=1))\n\n\n" + WARN
    (tmp_path / "w.py").write_text(HEADER + body)
    result = lint("--fix", "--fail-on", "error", "w.py", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "torch.log_softmax(x, dim=1)" in (tmp_path / "w.py").read_text()
    assert "TA106" in result.stdout
    assert lint("--fix", "w.py", cwd=tmp_path).exit_code == 1


def test_an_internal_error_while_writing_a_baseline_is_exit_2(tmp_path, monkeypatch):
    import torch_audit.rules.static.bias_before_norm as victim

    def boom(self, node):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(victim.BiasBeforeNorm, "leave_Module", boom)
    (tmp_path / "a.py").write_text(HEADER + STEP)
    result = lint("--write-baseline", "base.json", "a.py", cwd=tmp_path)
    assert result.exit_code == 2
    assert "1 internal error(s)" in result.output
    [entry] = json.loads((tmp_path / "base.json").read_text())["findings"]  # the rest is recorded
    assert entry["code"] == "TA101"
