"""Discovery and reading in an untrusted tree (issue 18, items 7, 8, 11, 13; issue 16's default
excludes).

A cloned repository decides what is in it: links out of the tree, a link to ``/``, a
``.gitignore`` that is a link to ``/dev/zero``, a sparse file of gigabytes, patterns git accepts
and pathspec does not. Each gets one clear line and the documented exit code, never a traceback,
a hang, unbounded memory, or a write outside the project.

Links, devices and sparse files need a POSIX file system; CI (Linux) runs them all.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.cli import cli

posix = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links, devices and sparse files")
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}

#: One safe fix (TA310: model.forward(x) -> model(x)).
FIXABLE = "import torch\n\n\ndef evaluate(model, x):\n    model.eval()\n    with torch.no_grad():\n        return model.forward(x)\n"
FIXED = FIXABLE.replace("model.forward(x)", "model(x)")

_PEAK = (
    "import resource, sys\n"
    "from torch_audit.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
    "    sys.stderr.write(f'@@peak {peak}\\n')\n"
)


def _limit_memory() -> None:  # in the child: a runaway read fails instead of eating the machine
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


def lint(cwd: Path, *args: str, timeout: float = 120, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, "lint", *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, stdin=stdin,
        preexec_fn=_limit_memory if sys.platform.startswith("linux") else None,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def peak_mb(proc: subprocess.CompletedProcess) -> float:
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@peak ")][-1]
    return int(line.split()[1]) / 1024


def messages(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln and not ln.startswith("@@peak")]


def paths_in(proc: subprocess.CompletedProcess) -> set[str]:
    return {f["path"] for f in json.loads(proc.stdout)}


# -- item 7: directory links are not followed; --fix stays in the project ---------------------


@posix
def test_a_directory_link_out_of_the_tree_is_not_followed(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "own.py").write_text(FIXABLE)
    (outside / "theirs.py").write_text(FIXABLE)
    (project / "vendor").symlink_to(outside, target_is_directory=True)
    proc = lint(project, ".", "--no-cache", "--output-format", "json")
    assert paths_in(proc) == {"own.py"}
    # --fix does not reach it either
    lint(project, ".", "--no-cache", "--fix")
    assert (outside / "theirs.py").read_text() == FIXABLE
    assert (project / "own.py").read_text() == FIXED


@posix
def test_a_directory_link_named_on_the_command_line_is_linted(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "theirs.py").write_text(FIXABLE)
    (project / "vendor").symlink_to(outside, target_is_directory=True)
    proc = lint(project, "vendor", "--no-cache", "--output-format", "json")
    assert paths_in(proc) == {"vendor/theirs.py"}


@posix
def test_a_link_to_the_root_directory_is_not_walked(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / "everything").symlink_to("/", target_is_directory=True)
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json", timeout=60)
    assert paths_in(proc) == {"own.py"}
    assert peak_mb(proc) < 200


@posix
def test_fix_never_writes_a_file_outside_the_project_unless_named(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "pyproject.toml").write_text("[tool.torch-audit]\n")
    (project / "own.py").write_text(FIXABLE)
    (outside / "theirs.py").write_text(FIXABLE)
    (project / "linked.py").symlink_to(outside / "theirs.py")
    proc = lint(project, ".", "--no-cache", "--fix")
    assert (project / "own.py").read_text() == FIXED
    assert (outside / "theirs.py").read_text() == FIXABLE
    assert (project / "linked.py").is_symlink()
    warnings = [m for m in messages(proc) if "outside the project" in m]
    assert len(warnings) == 1 and "linked.py" in warnings[0], proc.stderr
    assert proc.returncode == 1  # the unfixed finding is still reported
    # named on the command line: the user asked for it
    lint(project, "linked.py", "--no-cache", "--fix")
    assert (outside / "theirs.py").read_text() == FIXED
    assert (project / "linked.py").is_symlink()


# -- item 8: bounded reads ----------------------------------------------------------------------


@posix
def test_a_huge_sparse_file_is_skipped_by_its_size_without_being_read(tmp_path):
    big = tmp_path / "huge.py"
    with open(big, "wb") as fh:
        fh.write(b"import torch\n")
        fh.truncate(1 * 2**30)  # 1 GB, no disk blocks
    proc = lint(tmp_path, ".", "--no-cache", "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    assert any("huge.py: skipped, 1024.0 MB is over the 2 MB limit" in m for m in messages(proc)), proc.stderr
    assert peak_mb(proc) < 200


@posix
def test_a_gitignore_linked_to_dev_zero_is_not_read(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / ".gitignore").symlink_to("/dev/zero")
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json", timeout=60)
    assert paths_in(proc) == {"own.py"}
    assert peak_mb(proc) < 200


@posix
def test_a_gitignore_linked_to_stdin_does_not_hang(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").symlink_to("/dev/stdin")
    # stdin is a pipe that nobody writes to or closes: reading it would block forever
    read_end, write_end = os.pipe()
    try:
        proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json", timeout=60, stdin=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert paths_in(proc) == {"own.py"}


@posix
def test_an_oversized_gitignore_is_ignored_with_a_warning(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    with open(tmp_path / ".gitignore", "wb") as fh:
        fh.write(b"own.py\n")
        fh.truncate(64 * 2**20)
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json")
    assert paths_in(proc) == {"own.py"}
    assert [m for m in messages(proc) if ".gitignore" in m and "too large" in m], proc.stderr
    assert peak_mb(proc) < 200


# -- item 11: patterns git accepts, pathspec does not ------------------------------------------


def test_a_lone_exclamation_mark_in_gitignore_is_ignored_as_git_does(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / "generated.py").write_text(FIXABLE)
    (tmp_path / ".gitignore").write_text("!\ngenerated.py\n\\\n")
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json")
    assert proc.returncode == 1, proc.stderr
    assert paths_in(proc) == {"own.py"}  # the valid pattern still applies


@pytest.mark.parametrize(
    "table",
    [
        'exclude = ["!"]',
        'extend-exclude = ["legacy/", "!"]',
        '[tool.torch-audit.per-file-ignores]\n"!" = ["TA310"]',
    ],
)
def test_an_invalid_pattern_in_the_configuration_is_one_config_error(tmp_path, table):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / "pyproject.toml").write_text(f"[tool.torch-audit]\n{table}\n")
    proc = lint(tmp_path, ".", "--no-cache")
    assert proc.returncode == 2
    (line,) = messages(proc)
    assert line.startswith("torch-audit: error: ") and "pyproject.toml" in line and "'!'" in line, line


@pytest.mark.parametrize("option", ["--exclude", "--extend-exclude"])
def test_an_invalid_pattern_on_the_command_line_is_one_error(tmp_path, option):
    (tmp_path / "own.py").write_text(FIXABLE)
    proc = lint(tmp_path, ".", "--no-cache", option, "!")
    assert proc.returncode == 2
    (line,) = messages(proc)
    assert line.startswith("torch-audit: error: ") and option in line and "'!'" in line, line


# -- item 13: a link loop named on the command line, an unreadable pyproject.toml --------------


@posix
def test_a_symlink_loop_named_on_the_command_line_is_one_warning(tmp_path):
    (tmp_path / "loop.py").symlink_to(tmp_path / "loop.py")
    (tmp_path / "own.py").write_text(FIXABLE)
    proc = lint(tmp_path, "loop.py", "own.py", "--no-cache", "--output-format", "json")
    assert proc.returncode == 1
    assert paths_in(proc) == {"own.py"}
    assert messages(proc) == ["torch-audit: warning: loop.py: symbolic link loop, skipped"]


def test_an_unreadable_pyproject_in_a_parent_directory_is_one_config_error(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.torch-audit]\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "own.py").write_text(FIXABLE)
    unreadable = str(tmp_path / "pyproject.toml")
    real_read_text, real_open = Path.read_text, open

    def read_text(self, *args, **kwargs):  # as `chmod 000` does for anyone but root
        if str(self) == unreadable:
            raise PermissionError(13, "Permission denied", unreadable)
        return real_read_text(self, *args, **kwargs)

    def guarded_open(file, *args, **kwargs):
        if str(file) == unreadable:
            raise PermissionError(13, "Permission denied", unreadable)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.chdir(tmp_path / "pkg")
    result = CliRunner().invoke(cli, ["lint", "own.py", "--no-cache", "--jobs", "1"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    (line,) = [ln for ln in result.stderr.splitlines() if ln]
    assert line.startswith("torch-audit: error: ") and "pyproject.toml" in line and "Permission denied" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_an_unreadable_pyproject_for_real(tmp_path):  # pragma: no cover - CI runs as root
    (tmp_path / "pyproject.toml").write_text("[tool.torch-audit]\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "own.py").write_text(FIXABLE)
    (tmp_path / "pyproject.toml").chmod(0)
    try:
        proc = lint(tmp_path / "pkg", "own.py", "--no-cache")
    finally:
        (tmp_path / "pyproject.toml").chmod(0o644)
    assert proc.returncode == 2 and len(messages(proc)) == 1


# -- issue 16: build outputs are excluded where they live, not at any depth ---------------------


def test_dist_and_build_are_skipped_only_where_build_outputs_live(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    for rel in (
        "dist/p/copy.py",  # next to the project's pyproject.toml: a build output
        "build/lib/p/copy.py",
        "pkg/dist/sampler.py",  # a source package that happens to be called dist
        "pkg/build/graph.py",
        "plugins/x/setup.py",
        "plugins/x/build/lib/copy.py",  # next to a setup.py: a build output
        "plugins/x/src/own.py",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if rel.endswith("setup.py") else FIXABLE)
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json")
    assert paths_in(proc) == {"pkg/dist/sampler.py", "pkg/build/graph.py", "plugins/x/src/own.py"}
    # --exclude replaces the defaults; --extend-exclude keeps them
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json", "--exclude", "plugins")
    assert "dist/p/copy.py" in paths_in(proc)
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json", "--extend-exclude", "plugins")
    assert paths_in(proc) == {"pkg/dist/sampler.py", "pkg/build/graph.py"}


def test_stdin_filename_is_excluded_as_discovery_would_decide(tmp_path):
    """``--stdin-filename`` (editors, pre-commit) follows the same exclusion rules as the walk."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")

    def excluded(name: str, *extra: str) -> bool:
        proc = subprocess.run(
            [sys.executable, "-m", "torch_audit", "lint", "--stdin-filename", name, "--force-exclude",
             "--output-format", "json", *extra],
            cwd=tmp_path, env=ENV, input=FIXABLE, capture_output=True, text=True, timeout=120,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout or "[]") == []

    assert not excluded("pkg/dist/sampler.py")
    assert excluded("dist/p/copy.py")
    assert excluded("pkg/generated/x.py", "--extend-exclude", "generated")


def test_an_invalid_pattern_with_stdin_is_one_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "--stdin-filename", "x.py", "--exclude", "!"],
        cwd=tmp_path, env=ENV, input=FIXABLE, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    (line,) = [ln for ln in proc.stderr.splitlines() if ln]
    assert line.startswith("torch-audit: error: ") and "'!'" in line, line


@posix
def test_a_file_name_with_a_newline_stays_on_one_warning_line(tmp_path):
    (tmp_path / "own.py").write_text(FIXABLE)
    (tmp_path / "a\nb.py").symlink_to(tmp_path / "missing.py")  # a broken link: warned about
    proc = lint(tmp_path, ".", "--no-cache", "--output-format", "json")
    assert paths_in(proc) == {"own.py"}
    assert messages(proc) == ['torch-audit: warning: "a\\nb.py": broken symbolic link, skipped'], proc.stderr
