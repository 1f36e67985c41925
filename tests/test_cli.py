"""`torch-audit lint` as a user meets it: exit codes, bad input, configuration, suppression."""

from __future__ import annotations

import json
import re
import os
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.cli import cli

BAD = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F


    def step(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)
    """
)
GOOD = "import torch\n\nx = torch.zeros(3)\n"


def lint(*args, cwd: Path):
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, ["lint", "--no-cache", "--jobs", "1", *map(str, args)], catch_exceptions=False)
    finally:
        os.chdir(old)
    return result


@pytest.fixture
def project(tmp_path):
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "good.py").write_text(GOOD)
    return tmp_path


def test_exit_codes(project):
    assert lint("good.py", cwd=project).exit_code == 0
    result = lint(cwd=project)
    assert result.exit_code == 1
    assert "bad.py:7:12: TA101" in result.stdout
    assert "Found 1 finding" in result.stdout
    assert lint("--exit-zero", cwd=project).exit_code == 0


def test_missing_path_is_exit_2_with_one_line(project):
    result = lint("nope.py", cwd=project)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["torch-audit: error: nope.py: no such file or directory"]


def test_unknown_option_is_a_usage_error(project):
    assert lint("--frobnicate", cwd=project).exit_code == 2


def test_directory_without_python_files(tmp_path):
    (tmp_path / "README.md").write_text("hi")
    result = lint(cwd=tmp_path)
    assert result.exit_code == 0
    assert "no Python files" in result.stderr


def test_syntax_error_is_a_finding_and_other_files_still_lint(project):
    (project / "broken.py").write_text("import torch\n\ndef f(:\n    pass\n")
    result = lint(cwd=project)
    assert result.exit_code == 1
    assert "broken.py:3:7: TA001 SyntaxError: invalid syntax" in result.stdout
    assert "bad.py:7:12: TA101" in result.stdout


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"import torch\x00\n", "NUL bytes"),
        (b"import torch\nx = '\xff\xfe'\n", "cannot decode as utf-8"),
        (b"# -*- coding: klingon -*-\nimport torch\n", "unknown encoding"),
    ],
)
def test_unreadable_source(tmp_path, content, reason):
    (tmp_path / "x.py").write_bytes(content)
    result = lint(cwd=tmp_path)
    assert result.exit_code == 1
    assert "TA002 cannot read file:" in result.stdout and reason in result.stdout


def test_latin1_cookie_is_linted_normally(tmp_path):
    src = "# -*- coding: latin-1 -*-\nimport torch\nimport torch.nn.functional as F\n# caf\xe9\n" + BAD.split("\n", 2)[2]
    (tmp_path / "x.py").write_bytes(src.encode("latin-1"))
    result = lint(cwd=tmp_path)
    assert "TA101" in result.stdout and "TA002" not in result.stdout


def test_broken_symlink_and_loop(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "dangling.py").symlink_to(tmp_path / "missing.py")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    result = lint(cwd=tmp_path)
    assert result.exit_code == 0
    assert "broken symbolic link" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    f = tmp_path / "secret.py"
    f.write_text(GOOD)
    f.chmod(0)
    result = lint(cwd=tmp_path)
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_deeply_nested_file_is_bounded(tmp_path):
    (tmp_path / "deep.py").write_text("import torch\nx = " + "(" * 1000 + "1" + ")" * 1000 + "\n")
    (tmp_path / "deep2.py").write_text("import torch\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    result = lint(cwd=tmp_path)
    assert result.exit_code in (0, 1)
    assert "Traceback" not in result.stderr + result.stdout


def test_huge_generated_file_is_skipped_with_a_reason(tmp_path):
    line = "weights_{} = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])\n"
    big = "import torch\n" + "".join(line.format(i) for i in range(80_000))
    assert len(big) > 5_000_000
    (tmp_path / "generated.py").write_text(big)
    (tmp_path / "bad.py").write_text(BAD)
    result = lint(cwd=tmp_path)
    assert result.exit_code == 1, "the other file is still linted"
    assert re.search(r"generated.py: skipped, 5\.\d MB is over the 2 MB limit", result.stderr), result.stderr


def test_internal_error_in_one_rule(tmp_path, monkeypatch):
    from torch_audit.catalog import Catalog

    import torch_audit.rules.static.bias_before_norm as victim

    def boom(self, node):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(victim.BiasBeforeNorm, "leave_Module", boom)
    (tmp_path / "bad.py").write_text(BAD)
    result = lint(cwd=tmp_path)
    assert result.exit_code == 2
    assert "TA003 internal error in TA201 (bias-before-norm): ZeroDivisionError: planted" in result.stdout
    assert "bad.py:7:12: TA101" in result.stdout, "the other rules still run"
    assert "Traceback" not in result.stderr
    verbose = lint("--verbose", cwd=tmp_path)
    assert "Traceback" in verbose.stderr and "planted" in verbose.stderr


def test_select_ignore_by_code_prefix_and_name(project):
    assert "TA101" not in lint("--ignore", "softmax-before-cross-entropy", cwd=project).stdout
    assert "TA101" not in lint("--select", "TA2", cwd=project).stdout
    assert "TA101" in lint("--select", "TA1", cwd=project).stdout
    assert lint("--select", "TA999", cwd=project).exit_code == 2


# -- suppression ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "comment",
    [
        "# torch-audit: ignore[TA101]",
        "# torch-audit: ignore[softmax-before-cross-entropy]",
        "# torch-audit: ignore",
        "# noqa: TA101",
        "# NOQA:TA101,E501",
    ],
)
def test_suppression_comments(tmp_path, comment):
    (tmp_path / "x.py").write_text(BAD.replace("probs, y)", f"probs, y)  {comment}"))
    assert lint(cwd=tmp_path).exit_code == 0


def test_bare_noqa_and_other_codes_do_not_suppress(tmp_path):
    for comment in ("# noqa", "# torch-audit: ignore[TA201]", "# noqa: E501"):
        (tmp_path / "x.py").write_text(BAD.replace("probs, y)", f"probs, y)  {comment}"))
        assert lint(cwd=tmp_path).exit_code == 1, comment


def test_suppression_on_any_line_of_a_multiline_statement(tmp_path):
    src = BAD.replace("return F.cross_entropy(probs, y)", "return F.cross_entropy(\n        probs,  # torch-audit: ignore[TA101]\n        y,\n    )")
    (tmp_path / "x.py").write_text(src)
    assert lint(cwd=tmp_path).exit_code == 0


def test_ignore_file(tmp_path):
    (tmp_path / "x.py").write_text("# torch-audit: ignore-file[TA101]\n" + BAD)
    assert lint(cwd=tmp_path).exit_code == 0


def test_unused_suppression_in_preview(tmp_path):
    (tmp_path / "x.py").write_text(GOOD.replace("zeros(3)", "zeros(3)  # torch-audit: ignore[TA101]"))
    assert lint(cwd=tmp_path).exit_code == 0
    result = lint("--preview", cwd=tmp_path)
    assert "TA004 unused suppression of TA101" in result.stdout


# -- configuration -----------------------------------------------------------------------------

def write_config(root: Path, body: str) -> None:
    (root / "pyproject.toml").write_text("[tool.torch-audit]\n" + textwrap.dedent(body))


def test_config_select_and_cli_override(project):
    # Ruff's layering: the command line's --select starts afresh, its other flags adjust the file
    write_config(project, 'ignore = ["TA101"]\n')
    assert lint(cwd=project).exit_code == 0
    assert lint("--select", "TA101", cwd=project).exit_code == 1, "--select drops the file's ignore"
    assert lint("--extend-select", "TA101", cwd=project).exit_code == 1, "the command line wins"
    assert lint("--extend-select", "TA2", cwd=project).exit_code == 0, "the file's ignore holds"
    assert lint("--select", "TA101", "--ignore", "TA101", cwd=project).exit_code == 0
    write_config(project, 'select = ["TA2"]\n')
    assert lint(cwd=project).exit_code == 0
    assert lint("--select", "TA1", cwd=project).exit_code == 1
    assert lint("--extend-select", "TA1", cwd=project).exit_code == 1
    write_config(project, 'select = ["TA1"]\nignore = ["TA1"]\n')
    assert lint(cwd=project).exit_code == 0, "a tie goes to ignore"


@pytest.mark.parametrize(
    "flags,found",
    [
        (("--select", "TA101", "--ignore", "TA1"), True),
        (("--select", "TA1", "--ignore", "TA101"), False),
        (("--select", "ALL", "--ignore", "TA10"), False),
        (("--select", "TA10", "--ignore", "ALL"), True),
        (("--ignore", "TA1", "--extend-select", "softmax-before-cross-entropy"), True),
    ],
)
def test_the_narrower_selector_wins(project, flags, found):
    assert (lint(*flags, cwd=project).exit_code == 1) is found


def test_config_found_from_the_first_path_upwards(project):
    write_config(project, 'ignore = ["softmax-before-cross-entropy"]\n')
    (project / "pkg").mkdir()
    (project / "pkg" / "bad.py").write_text(BAD)
    assert lint(project / "pkg", cwd=project.parent).exit_code == 0


@pytest.mark.parametrize(
    "body,expected",
    [
        ("selec = ['TA1']\n", "tool.torch-audit.selec: unknown key (did you mean 'select'?)"),
        ("select = 'TA1'\n", "tool.torch-audit.select: expected a list of strings"),
        ("ignore = ['TA999']\n", "unknown rule code, prefix or name 'TA999'"),
        ("preview = 1\n", "tool.torch-audit.preview: expected true or false"),
        ("[tool.torch-audit.options.nope]\nx = 1\n", "options.nope: unknown rule"),
        ("select = [\n", "invalid TOML"),
    ],
)
def test_config_errors_are_one_line_exit_2(project, body, expected):
    write_config(project, body)
    result = lint(cwd=project)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "pyproject.toml" in lines[0], lines


def test_per_file_ignores(project):
    (project / "tests").mkdir()
    (project / "tests" / "bad.py").write_text(BAD)
    write_config(project, '[tool.torch-audit.per-file-ignores]\n"tests/*" = ["TA1"]\n')
    result = lint(cwd=project)
    assert "tests/bad.py" not in result.stdout and "bad.py:7:12" in result.stdout


def test_explicit_config_file(project, tmp_path_factory):
    other = tmp_path_factory.mktemp("cfg") / "torch-audit.toml"
    other.write_text('ignore = ["TA101"]\n')
    assert lint("--config", other, cwd=project).exit_code == 0


# -- discovery ---------------------------------------------------------------------------------

def test_gitignore_and_default_excludes(project):
    (project / ".gitignore").write_text("generated/\n")
    for d in ("generated", ".venv", "build", "node_modules"):
        (project / d).mkdir()
        (project / d / "bad.py").write_text(BAD)
    result = lint(cwd=project)
    assert result.stdout.count("TA101") == 1
    # a file named explicitly is always linted
    assert lint("generated/bad.py", cwd=project).exit_code == 1
    assert lint("--extend-exclude", "bad.py", cwd=project).exit_code == 0


# -- formats, jobs and cache -------------------------------------------------------------------

def test_json_output_keys(project):
    result = lint("--output-format", "json", cwd=project)
    data = json.loads(result.stdout)
    assert [f["code"] for f in data] == ["TA101"]
    assert set(data[0]) == {"code", "name", "severity", "message", "help", "path", "line", "column", "end_line", "end_column", "fix"}


def test_output_file_is_written(project):
    lint("--output-format", "json", "-o", "out/report.json", cwd=project)
    assert json.loads((project / "out" / "report.json").read_text())[0]["code"] == "TA101"


def test_jobs_give_the_same_findings(tmp_path):
    for i in range(20):
        (tmp_path / f"m{i}.py").write_text(BAD if i % 2 else GOOD)
    one = lint("--jobs", "1", "--output-format", "json", cwd=tmp_path).stdout
    two = lint("--jobs", "2", "--output-format", "json", cwd=tmp_path).stdout
    assert json.loads(one) == json.loads(two) and len(json.loads(one)) == 10


def test_cache_is_used_and_survives_corruption(project):
    runner = CliRunner()
    os.chdir(project)
    first = runner.invoke(cli, ["lint", "--jobs", "1"])
    cache = project / ".torch_audit_cache"
    entries = [p for p in cache.rglob("*.json")]
    assert first.exit_code == 1 and entries
    for p in entries:
        p.write_bytes(b"\x00garbage{")
    second = runner.invoke(cli, ["lint", "--jobs", "1"])
    assert second.stdout == first.stdout
    # a changed rule set does not reuse old entries
    third = runner.invoke(cli, ["lint", "--jobs", "1", "--ignore", "TA101"])
    assert third.exit_code == 0


def test_version_and_module_entry(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and "torch-audit" in result.stdout


def test_rule_page_and_list(run_cli):
    page = run_cli("rule", "softmax-before-cross-entropy")
    assert page.returncode == 0
    assert "## What it does" in page.stdout and "## Example" in page.stdout and "## Use instead" in page.stdout
    assert "# error:" not in page.stdout
    assert run_cli("rule", "TA101").stdout == page.stdout
    assert run_cli("rule", "nope").returncode == 2
    listing = json.loads(run_cli("rules", "--format", "json").stdout)
    assert any(r["code"] == "TA101" for r in listing)


def test_shared_config_may_name_runtime_rules(project):
    """One [tool.torch-audit] serves both passes: lint accepts runtime codes and options."""
    write_config(project, 'ignore = ["nonfinite-loss", "TA101"]\n[tool.torch-audit.options.exploding-gradient]\nfactor = 20.0\n')
    result = lint(cwd=project)
    assert result.exit_code == 0, result.stderr


def test_editing_a_rule_module_starts_a_fresh_cache(tmp_path):
    import torch_audit.rules.static.bias_before_norm as rule_module
    from torch_audit.catalog import load_catalog
    from torch_audit.lint.engine import LintSettings

    settings = LintSettings(rules=load_catalog(("static",)).select(kind="static"))
    before = settings.fingerprint("1.0")
    path = Path(rule_module.__file__)
    stat = path.stat()
    try:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert settings.fingerprint("1.0") != before
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert settings.fingerprint("1.0") == before
