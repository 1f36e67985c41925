"""The repository stands on its own: nothing in the tests, the package, the CI script or the
benchmarks reads a folder beside the clone (a developer's machine may have one, a user's clone
does not). Checked twice: by reading the sources for such paths, and by running the tests that
use vendored data from a copy of the repository in a directory with nothing beside it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = {"auditor", "rules", "fixtures", "tests", "benchmarks", ".ci", "pyproject.toml", "constraints.txt"}
# The spellings of a path that leaves the repository, built from pieces so that this file does
# not match itself: a sibling folder, the parent of the repository root, or more steps up from
# `__file__` than the file is deep.
SIBLING = re.compile(r"\.\./(?:shared|corpus)\b|ROOT\.parent\b|/work/" + "shared")
PARENTS_INDEX = re.compile(r"__file__.*\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"__file__\)?(?:\.resolve\(\))?((?:\.parent)+)\b")


def leaves_repository(line: str, depth: int) -> bool:
    """Whether ``line`` of a file ``depth`` folders below the root names a path outside it."""
    if SIBLING.search(line):
        return True
    index = PARENTS_INDEX.search(line)
    if index and int(index.group(1)) > depth:
        return True
    chain = PARENT_CHAIN.search(line)
    return bool(chain and chain.group(1).count(".parent") > depth + 1)


def _scanned_files():
    for name in _repository_files():
        first = name.split("/", 1)[0]
        if first in SCANNED and name.endswith((".py", ".sh", ".toml", ".md", ".yml", ".yaml", ".cfg", ".ini", "run")):
            yield ROOT / name


def test_no_source_reads_a_path_outside_the_repository():
    offenders = []
    for file in _scanned_files():
        if file == Path(__file__).resolve():
            continue
        depth = len(file.relative_to(ROOT).parts) - 1
        text = file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if leaves_repository(line, depth):
                offenders.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "paths outside the repository:\n" + "\n".join(offenders)


def test_the_scan_finds_what_it_is_looking_for():
    """The check is not vacuous: the spellings that broke a fresh clone match it, the paths of
    files inside the repository do not."""
    assert leaves_repository('S = Path(__file__).resolve().parents[2] / "sibling" / "s.json"', depth=1)
    assert leaves_repository('schema_path = ROOT.parent / "sibling" / "x.json"', depth=1)
    assert leaves_repository("fetched with ../" + "shared/corpus/fetch.sh", depth=1)
    assert leaves_repository("ROOT = Path(__file__).resolve().parent.parent.parent", depth=1)
    assert not leaves_repository("ROOT = Path(__file__).resolve().parents[2]", depth=2)
    assert not leaves_repository("ROOT = Path(__file__).resolve().parent.parent", depth=1)
    assert not leaves_repository('S = Path(__file__).resolve().parent / "data" / "s.json"', depth=1)


def _repository_files() -> list[str]:
    """What a fresh clone holds: tracked files and new files not yet ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone has")
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


@pytest.mark.slow
def test_tests_using_vendored_data_pass_in_a_copy_with_no_siblings(tmp_path):
    """The SARIF tests read the vendored schema; in a copy whose parent holds nothing else they
    pass, and an audit hook fails the run if anything opens a file beside the copy."""
    clone = tmp_path / "clone"
    for name in _repository_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (tmp_path / "outside_guard.py").write_text(
        "import os, sys\n"
        f"CLONE = {str(clone)!r}\n"
        f"PARENT = {str(tmp_path)!r}\n"
        "def _hook(event, args):\n"
        "    if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):\n"
        "        path = os.path.abspath(os.fsdecode(args[0]))\n"
        "        if (path.startswith(PARENT + os.sep) and not path.startswith(CLONE + os.sep)\n"
        "                and not path.endswith('outside_guard.py')):\n"
        "            raise RuntimeError('read outside the repository: ' + path)\n"
        "sys.addaudithook(_hook)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NO_COLOR": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "outside_guard",
            "tests/test_report.py", "tests/test_help.py", "tests/test_notebook.py", "-k", "sarif",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b(\d+) passed", result.stdout), result.stdout[-500:]
    assert " skipped" not in result.stdout.splitlines()[-1], result.stdout[-500:]
