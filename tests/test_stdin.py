"""`torch-audit lint --stdin-filename PATH` (and `-`): the source comes from standard input, as
from an editor's buffer; PATH decides the configuration, per-file-ignores and excludes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from torch_audit.cli import cli

LOG_SOFTMAX = "import torch\n\n\ndef f(x):\n    return torch.log(torch.softmax(x, dim=1))\n"
FIXED = "import torch\n\n\ndef f(x):\n    return torch.log_softmax(x, dim=1)\n"
WARN = "import torch\nimport torch.nn.functional as F\n\ny = F.softmax(torch.ones(3))\n"


def lint(*args, cwd: Path, stdin: str):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["lint", "--no-cache", *map(str, args)], input=stdin, catch_exceptions=False)
    finally:
        os.chdir(old)


def test_findings_are_reported_under_the_given_name(tmp_path):
    result = lint("--stdin-filename", "pkg/model.py", cwd=tmp_path, stdin=WARN)
    assert result.exit_code == 1
    assert result.stdout.startswith("pkg/model.py:4:5: TA106 ")
    assert not (tmp_path / "pkg").exists()  # nothing needs to exist on disk
    result = lint("-", cwd=tmp_path, stdin=WARN)
    assert result.exit_code == 1 and result.stdout.startswith("-:4:5: TA106 ")
    assert lint("--stdin-filename", "a.py", cwd=tmp_path, stdin="import torch\n").exit_code == 0


def test_the_paths_configuration_applies(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text(
        '[tool.torch-audit]\nextend-exclude = ["generated"]\n'
        'per-file-ignores = { "legacy/*" = ["TA106"] }\n'
    )
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nignore = ["TA106"]\n')
    # the nearest configuration to the named path, not to the current directory
    assert lint("--stdin-filename", "a.py", cwd=tmp_path, stdin=WARN).exit_code == 0
    assert lint("--stdin-filename", "sub/a.py", cwd=tmp_path, stdin=WARN).exit_code == 1
    assert lint("--stdin-filename", "sub/legacy/a.py", cwd=tmp_path, stdin=WARN).exit_code == 0
    excluded = lint("--stdin-filename", "sub/generated/a.py", cwd=tmp_path, stdin=WARN)
    assert excluded.exit_code == 0 and "TA106" not in excluded.output
    assert lint("--stdin-filename", "sub/build/a.py", cwd=tmp_path, stdin=WARN).exit_code == 0  # a default exclude


def test_fix_writes_the_fixed_source_to_stdout(tmp_path):
    result = lint("--stdin-filename", "a.py", "--fix", cwd=tmp_path, stdin=LOG_SOFTMAX)
    assert result.exit_code == 0, result.output
    assert result.stdout == FIXED
    assert not (tmp_path / "a.py").exists()
    # findings left (no fix) go to stderr, the source still to stdout
    result = lint("--stdin-filename", "a.py", "--fix", cwd=tmp_path, stdin=LOG_SOFTMAX + WARN.split("\n", 1)[1])
    assert result.exit_code == 1
    assert result.stdout == FIXED + WARN.split("\n", 1)[1]
    assert "a.py:8:5: TA106" in result.stderr
    # an excluded path: the input comes back unchanged (an editor must never get an empty buffer)
    result = lint("--stdin-filename", "build/a.py", "--fix", cwd=tmp_path, stdin=LOG_SOFTMAX)
    assert result.exit_code == 0 and result.stdout == LOG_SOFTMAX
    result = lint("--stdin-filename", "a.py", "--diff", cwd=tmp_path, stdin=LOG_SOFTMAX)
    assert result.exit_code == 1
    assert "-    return torch.log(torch.softmax(x, dim=1))" in result.stdout


def test_named_paths_are_linted_instead_of_stdin(tmp_path):
    (tmp_path / "real.py").write_text(WARN)
    result = lint("--stdin-filename", "other.py", "real.py", cwd=tmp_path, stdin=LOG_SOFTMAX)
    assert result.exit_code == 1
    assert "real.py:4:5: TA106" in result.stdout and "other.py" not in result.stdout


def test_a_notebook_on_stdin(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": WARN}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    result = lint("--stdin-filename", "n.ipynb", "--output-format", "json", cwd=tmp_path, stdin=json.dumps(nb))
    assert result.exit_code == 1
    [finding] = json.loads(result.stdout)
    assert (finding["path"], finding["cell"], finding["line"], finding["code"]) == ("n.ipynb", 1, 4, "TA106")


def test_stdin_in_a_real_process_keeps_bytes(tmp_path):
    source = "# coding: latin-1\n" + LOG_SOFTMAX.replace("def f", "# caf\xe9\ndef f")
    out = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "--no-cache", "--stdin-filename", "a.py", "--fix"],
        input=source.encode("latin-1"), capture_output=True, cwd=tmp_path, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == source.replace("torch.log(torch.softmax(x, dim=1))", "torch.log_softmax(x, dim=1)").encode("latin-1")
