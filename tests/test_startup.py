"""Start-up cost of `torch-audit lint` on a few named files: what it must not import.

libcst's own import is most of the start-up (its node classes are dataclasses); everything the
one-file path does not need is imported on first use. See benchmarks/lint_speed.py for the time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit.lint.runner import _TASK_BYTES, _TASK_MAX_FILES, _tasks

_PROBE = """
import json, sys
from torch_audit.cli import main
try:
    main(["lint", "--no-cache", *sys.argv[1:]])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""

#: only for a directory walk, a pool of workers, the cache, or a failure
NOT_ON_THE_ONE_FILE_PATH = (
    "pathspec",
    "multiprocessing",
    "concurrent.futures",
    "tempfile",
    "hashlib",
    "importlib.resources",
    "traceback",
    "torch",
)


def _modules(tmp_path: Path, *files: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *files], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _no_pyproject_above(path: Path) -> bool:
    return not any((d / "pyproject.toml").exists() for d in (path, *path.parents))


def test_linting_one_file_imports_only_what_it_needs(tmp_path):
    (tmp_path / "train.py").write_text("import torch\nx = torch.zeros(3).cuda()\n")
    modules = _modules(tmp_path, "train.py")
    assert "torch_audit.lint.engine" in modules and "libcst" in modules
    assert not [m for m in NOT_ON_THE_ONE_FILE_PATH if m in modules]


def test_a_file_that_never_mentions_torch_parses_no_table_and_no_config(tmp_path):
    if not _no_pyproject_above(tmp_path):
        pytest.skip("a pyproject.toml above the temporary directory")
    (tmp_path / "plain.py").write_text("x = 1\n")
    modules = _modules(tmp_path, "plain.py")
    assert "tomllib" not in modules and "tomli" not in modules
    assert not [m for m in NOT_ON_THE_ONE_FILE_PATH if m in modules]


def test_tasks_group_small_files_and_keep_big_ones_alone():
    sizes = [5 * _TASK_BYTES, 2 * _TASK_BYTES, _TASK_BYTES // 2, _TASK_BYTES // 2, *[10] * 40]
    tasks = _tasks(sizes)
    assert tasks[0] == [0] and tasks[1] == [1] and tasks[2] == [2, 3]
    assert sorted(p for t in tasks for p in t) == list(range(len(sizes)))
    assert all(len(t) <= _TASK_MAX_FILES for t in tasks)


_PROBE_COMMAND = """
import json, sys
from torch_audit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("args", [["--help"], ["rules"], ["rules", "--format", "json"], ["rule", "TA701"], ["lint", "--help"]])
def test_help_and_the_catalogue_never_import_torch(tmp_path, args):
    """`torch-audit --help` lists `run` without loading it; the catalogue lists runtime rules
    from their metadata (torch cost seconds of start-up on a loaded machine)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE_COMMAND, *args], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    modules = set(json.loads(proc.stdout.splitlines()[-1]))
    assert "torch_audit.cli" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]


def test_the_help_line_of_run_is_the_command_s_own():
    from click.testing import CliRunner

    from torch_audit.cli import RUN_SHORT_HELP, cli
    from torch_audit.runtime.run_command import run

    assert run.get_short_help_str(200) == RUN_SHORT_HELP
    listing = CliRunner().invoke(cli, ["--help"]).output
    assert re.search(rf"\n  run +{re.escape(RUN_SHORT_HELP)}\n", listing)  # the column width follows the longest name
