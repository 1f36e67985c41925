"""What the README says is what happens: the quickstart's count and output, the `[*]` marker, the
install instructions (this project, not the unrelated one on the package index), the wheel they
build, and the pre-commit snippet, run by the real pre-commit in a temporary repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _code_blocks(*languages: str) -> list[str]:
    """The fenced code blocks of the README in these languages, fence by fence."""
    blocks, current, language = [], None, None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in languages:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch_audit", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def _quickstart_block() -> list[str]:
    block = re.search(r"```text\n\$ torch-audit lint fixtures/examples\n(.*?)\n```", README, flags=re.S)
    assert block, "the README quotes the output of `torch-audit lint fixtures/examples`"
    return block.group(1).splitlines()


def test_the_quickstart_prints_what_the_readme_says():
    result = _cli("lint", "--no-cache", "fixtures/examples")
    assert result.returncode == 1, result.stderr  # "exits with code 1"
    printed = result.stdout.splitlines()
    findings = [line for line in printed if line.startswith("fixtures/examples/")]
    said = re.search(r"it prints (\w+) real findings", README)
    assert said and NUMBERS.index(said.group(1)) == len(findings), (said and said.group(1), len(findings))
    quoted = _quickstart_block()
    assert len(quoted) == len(printed), "the README quotes every line of the output"
    for readme_line, line in zip(quoted, printed):
        if readme_line.endswith(" ..."):  # a long message, cut
            assert line.startswith(readme_line[: -len(" ...")]), (readme_line, line)
        else:
            assert line == readme_line


def test_the_first_command_installs_what_the_readme_names():
    """"libcst, click and pathspec, no torch": the install's requirements, read from pyproject."""
    from torch_audit.tomlcompat import toml_parser  # tomllib, or tomli before Python 3.11

    tomllib = toml_parser()
    said = re.search(r"installs the linter \(([^)]*), no torch\)", README)
    assert said, "the README names what the first command installs"
    named = set(re.split(r", | and ", said.group(1)))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = {re.split(r"[<>=;\[ ]", d, 1)[0] for d in project["dependencies"] if "python_version" not in d}
    assert named == required and "torch" not in required


def test_fix_markers_are_what_the_readme_says():
    """`[*]` marks a finding --fix would fix: none in the example (its fixes are unsafe, counted as
    hidden), each finding with a fix under --unsafe-fixes."""
    plain = _cli("lint", "--no-cache", "fixtures/examples").stdout
    assert "[*]" not in plain
    hidden = re.search(r"No fixes available \((\d+) hidden fix", plain)
    data = json.loads(_cli("lint", "--no-cache", "--output-format", "json", "fixtures/examples").stdout)
    with_fix = [f for f in data if f.get("fix")]
    assert with_fix and all(f["fix"]["applicability"] == "unsafe" for f in with_fix)
    assert hidden and int(hidden.group(1)) == len(with_fix)
    unsafe = _cli("lint", "--no-cache", "--unsafe-fixes", "fixtures/examples").stdout.splitlines()
    marked = [line for line in unsafe if " [*] " in line]
    assert sorted(line.split(" ")[0] for line in marked) == sorted(
        f"{f['path']}:{f['line']}:{f['column']}:" for f in with_fix
    )
    assert "marks them" in README and "`[*]`" in README


def test_install_instructions_install_this_project():
    """The index name belongs to another project: no instruction installs it from there."""
    code = "\n".join(_code_blocks("bash", "sh", ""))
    assert not re.search(r"pip install\s+['\"]?torch-audit\b", code)
    assert "pip install ." in code and "pip wheel --no-deps . -w dist" in code
    prose = " ".join(README.split())
    assert "belongs to an unrelated project" in prose and "do not `pip install torch-audit`" in prose


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_the_command(tmp_path):
    """`pip wheel .` from the README: every module of the package and of the catalogue is in it
    (a package missing from pyproject.toml breaks every installed copy, not the editable one)."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("torch_audit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "torch_audit/" + p.relative_to(ROOT / "auditor").as_posix() for p in (ROOT / "auditor").rglob("*.py")
    } | {"torch_audit/rules/" + p.relative_to(ROOT / "rules").as_posix() for p in (ROOT / "rules").rglob("*.py")}
    assert sorted(expected - names) == []
    assert "torch_audit/fixtures/examples/train.py" in names  # the `rule` pages' examples
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "torch-audit = torch_audit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _readme_pre_commit_config() -> str:
    section = README.split("### pre-commit", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_readme_pre_commit_snippet_works_offline(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q")
    (project / ".pre-commit-config.yaml").write_text(_readme_pre_commit_config())
    (project / "torch-audit.toml").write_text('extend-exclude = ["legacy/"]\n')
    bad = "import torch\nimport torch.nn.functional as F\n\n\ndef f(m, x, y):\n    return F.cross_entropy(torch.softmax(m(x), 1), y)\n"
    (project / "legacy").mkdir()
    (project / "legacy" / "old.py").write_text(bad)
    (project / "good.py").write_text("import torch\n\nx = torch.zeros(3)\n")
    _git(project, "add", "-A")
    # torch-audit on PATH, as after `pip install .`; no network is needed by a `system` hook
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "home"), "NO_COLOR": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("VIRTUAL_ENV", None)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files"], cwd=project,
                              capture_output=True, text=True, env=env, timeout=600)

    clean = run()
    assert clean.returncode == 0, clean.stdout + clean.stderr  # legacy/ is excluded although named
    assert "torch-audit" in clean.stdout and "Passed" in clean.stdout
    (project / "bad.py").write_text(bad)
    _git(project, "add", "bad.py")
    failed = run()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "bad.py:6:12: TA101" in failed.stdout and "legacy/old.py" not in failed.stdout
