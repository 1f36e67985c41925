"""Which settings apply, and to which files: torch-audit.toml discovery, --show-settings,
--show-files, -v, --force-exclude, colour, "did you mean"."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.catalog import load_catalog
from torch_audit.cli import cli
from torch_audit.config import ConfigError, find_config, load_config

BAD = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F


    def step(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)
    """
)


def invoke(*args, cwd: Path, env: dict[str, str] | None = None):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False, env=env)
    finally:
        os.chdir(old)


def lint(*args, cwd: Path, env: dict[str, str] | None = None):
    return invoke("lint", "--no-cache", "--jobs", "1", *args, cwd=cwd, env=env)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BAD)
    return tmp_path


# -- configuration files beside pyproject.toml ---------------------------------------------------

@pytest.mark.parametrize("name", ["torch-audit.toml", ".torch-audit.toml"])
def test_a_torch_audit_toml_is_discovered_with_top_level_keys(project, name):
    assert lint(cwd=project).exit_code == 1
    (project / name).write_text('ignore = ["TA101"]\n')
    assert find_config(project / "pkg" / "bad.py") == project / name
    assert lint(cwd=project).exit_code == 0
    assert lint("pkg/bad.py", cwd=project).exit_code == 0


def test_the_nearest_configuration_wins_and_beats_pyproject_in_the_same_directory(project):
    (project / "pyproject.toml").write_text('[tool.torch-audit]\nignore = ["TA101"]\n')
    (project / "pkg" / "torch-audit.toml").write_text('select = ["TA2"]\n')
    assert find_config(project / "pkg") == project / "pkg" / "torch-audit.toml"
    (project / "pkg" / "pyproject.toml").write_text('[tool.torch-audit]\nselect = ["TA1"]\n')
    assert find_config(project / "pkg") == project / "pkg" / "torch-audit.toml"
    (project / "pkg" / ".torch-audit.toml").write_text('select = ["TA3"]\n')
    assert find_config(project / "pkg") == project / "pkg" / ".torch-audit.toml"
    # a pyproject.toml without the table does not count; the one above with it is too far
    (project / "pkg" / "torch-audit.toml").unlink()
    (project / "pkg" / ".torch-audit.toml").unlink()
    (project / "pkg" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert find_config(project / "pkg") == project / "pyproject.toml"


def test_a_tool_table_in_torch_audit_toml_is_a_config_error(project):
    path = project / "torch-audit.toml"
    path.write_text('[tool.torch-audit]\nignore = ["TA101"]\n')
    with pytest.raises(ConfigError, match="keys are top-level"):
        load_config(path, load_catalog())
    result = lint(cwd=project)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "torch-audit.toml: tool: unknown key" in result.stderr


# -- -v, --show-settings, --show-files -----------------------------------------------------------

def test_verbose_names_the_configuration_file(project):
    result = lint("-v", cwd=project)
    assert "no configuration file found" in result.stderr
    (project / "torch-audit.toml").write_text("preview = false\n")
    result = lint("-v", cwd=project)
    assert f"using configuration file {project / 'torch-audit.toml'}" in result.stderr
    assert "configuration file" not in lint(cwd=project).stderr


def test_show_settings_says_where_each_value_came_from(project):
    (project / "pyproject.toml").write_text(
        '[tool.torch-audit]\nignore = ["TA402"]\nextend-exclude = ["legacy/"]\n'
    )
    result = lint("--show-settings", "--extend-exclude", "gen/", cwd=project)
    assert result.exit_code == 0
    out = result.stdout
    config = str(project / "pyproject.toml")
    assert f"Configuration file: {config}" in out
    rows = {line.split("=")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert rows["ignore"].endswith(f'["TA402"]  # {config}')
    assert rows["extend-exclude"].endswith(f'["legacy/", "gen/"]  # {config} + command line')
    assert rows["preview"].endswith("false  # default")
    assert "TA101  softmax-before-cross-entropy" in out and "TA402" not in out.split("Enabled rules")[1]
    assert "bad.py" not in out  # nothing is linted

    # --select starts afresh: the file's ignore is shown as dropped, and TA402 is enabled
    result = lint("--show-settings", "--select", "TA4", cwd=project)
    rows = {line.split("=")[0].strip(): line for line in result.stdout.splitlines() if " = " in line}
    assert rows["select"].endswith('["TA4"]  # command line')
    assert rows["ignore"].endswith("[]  # command line (--select drops the file's value)")
    assert "TA402  adam-with-weight-decay" in result.stdout


def test_show_files_lists_what_would_be_linted_and_what_the_excludes_skipped(project):
    (project / "build").mkdir()
    (project / "build" / "gen.py").write_text(BAD)
    (project / "legacy").mkdir()
    (project / "legacy" / "old.py").write_text(BAD)
    (project / "ignored").mkdir()
    (project / "ignored" / "x.py").write_text(BAD)
    (project / ".gitignore").write_text("ignored/\n")
    (project / "torch-audit.toml").write_text('extend-exclude = ["legacy/*.py"]\n')
    result = lint("--show-files", cwd=project)
    assert result.exit_code == 0
    assert result.stdout == "pkg/bad.py\n"  # stdout: the files alone, for xargs
    # the pattern is named as written in the default list, whatever its spelling
    assert re.search(r"torch-audit: skipped build/: matches '[^']*build[^']*' in the default excludes", result.stderr)
    assert "torch-audit: skipped legacy/old.py: matches 'legacy/*.py' in extend-exclude" in result.stderr
    assert "torch-audit: skipped ignored/: listed in .gitignore" in result.stderr


# -- --force-exclude -------------------------------------------------------------------------------

def test_force_exclude_applies_the_excludes_to_files_named_explicitly(project):
    (project / "build").mkdir()
    (project / "build" / "gen.py").write_text(BAD)
    (project / "torch-audit.toml").write_text('extend-exclude = ["pkg/bad.py"]\n')
    # named explicitly, a file is linted whatever the excludes say ...
    assert lint("build/gen.py", cwd=project).exit_code == 1
    assert lint("pkg/bad.py", cwd=project).exit_code == 1
    # ... unless --force-exclude (what pre-commit needs: it names every file)
    for path in ("build/gen.py", "pkg/bad.py"):
        result = lint("--force-exclude", path, cwd=project)
        assert result.exit_code == 0, result.stdout
        assert "TA101" not in result.stdout
    result = lint("--force-exclude", "--show-files", "build/gen.py", "pkg/bad.py", cwd=project)
    assert result.stdout == ""
    assert re.search(r"skipped build/gen.py: matches '[^']*build[^']*' in the default excludes", result.stderr)
    # the configuration key does the same
    (project / "torch-audit.toml").write_text('force-exclude = true\n')
    assert lint("build/gen.py", cwd=project).exit_code == 0
    assert lint("pkg/bad.py", cwd=project).exit_code == 1


# -- colour ---------------------------------------------------------------------------------------

def test_lint_colour_follows_no_color_and_force_color(project, run_cli):
    plain = run_cli("lint", "--no-cache", "pkg", cwd=project)  # NO_COLOR=1 from the fixture
    assert "TA101" in plain.stdout and "\x1b[" not in plain.stdout
    forced = run_cli("lint", "--no-cache", "pkg", cwd=project, env={"NO_COLOR": "", "FORCE_COLOR": "1"})
    assert "\x1b[" in forced.stdout and "TA101" in forced.stdout
    both = run_cli("lint", "--no-cache", "pkg", cwd=project, env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert "\x1b[" not in both.stdout


# -- did you mean ---------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, suggested", [
    ("softmax", "'softmax-before-cross-entropy'"),
    ("bias-before-batchnorm", "'bias-before-norm'"),
    ("TA1O1", "'TA101'"),
    ("missing_eval_for_inference", "'missing-eval-for-inference'"),
])
def test_an_unknown_rule_suggests_close_names_and_codes(tmp_path, typed, suggested):
    result = invoke("rule", typed, cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"unknown rule {typed!r} (did you mean " in result.stderr and suggested in result.stderr


def test_an_unknown_selector_suggests_codes(project):
    result = lint("--select", "TA10O", cwd=project)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "torch-audit: error: unknown rule code, prefix or name 'TA10O' (did you mean 'TA101', 'TA102' or 'TA103'?)"
    )
    far = invoke("rule", "zzzzzz", cwd=project)
    assert "did you mean" not in far.stderr and "torch-audit rules" in far.stderr


def test_show_fixes_is_gone(project):
    """It was accepted and did nothing; an option that does nothing is a usage error now."""
    assert lint("--show-fixes", cwd=project).exit_code == 2


def test_fix_output_follows_no_color_and_force_color(project, run_cli):
    """--fix renders what remains (here TA101, whose fix is unsafe) with the colour rule of lint."""
    args = ("lint", "--no-cache", "--fix", "pkg")
    plain = run_cli(*args, cwd=project)
    assert "TA101" in plain.stdout and "\x1b[" not in plain.stdout
    forced = run_cli(*args, cwd=project, env={"NO_COLOR": "", "FORCE_COLOR": "1"})
    assert "TA101" in forced.stdout and "\x1b[" in forced.stdout
