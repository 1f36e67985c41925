"""``torch-audit run``'s options: one typed ``RunOptions`` from the command line, and one
``RunSettings`` whose runtime selection is resolved and validated once (issue 20)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.runtime import settings as settings_module
from torch_audit.runtime.run_command import RunOptions, resolve_settings, run

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fixtures" / "run"


def test_run_options_are_typed_and_keep_their_defaults():
    options = RunOptions.of({"select": ["TA7"], "every": None, "output_format": None, "max_steps": 3})
    assert options.select == ("TA7",) and options.every is None and options.max_steps == 3
    assert options.output_format == "text" and options.repeats == 5  # None keeps a non-None default
    with pytest.raises(TypeError, match="unknown run options: colour"):
        RunOptions.of({"colour": True})
    with pytest.raises(Exception):  # frozen: one object for the whole run
        options.every = 2  # type: ignore[misc]


def test_paths_are_made_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = RunOptions(output_file="out/report.json", html_file="r.html").with_absolute_paths()
    assert options.output_file == str(tmp_path / "out" / "report.json")
    assert options.html_file == str(tmp_path / "r.html")
    assert RunOptions(output_file="-").with_absolute_paths().output_file == "-"


def test_settings_resolve_the_selection_and_options(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-audit]\nignore = ["dead-activations"]\n'
        '[tool.torch-audit.options.exploding-gradient]\nfactor = 20.0\n'
    )
    script = tmp_path / "train.py"
    script.write_text("")
    settings = resolve_settings(RunOptions(option=("exploding-gradient.window=7",), every=2), script)
    codes = settings.selection.codes
    assert "TA709" not in codes and "TA705" in codes
    assert settings.selection.options["TA705"] == {"factor": 20.0, "window": 7}
    assert settings.every == 2 and settings.fail_on == "error" and settings.root == tmp_path


def test_a_run_validates_the_options_once(monkeypatch):
    calls = []
    original = settings_module.resolve_options

    def counting(catalog, options):
        calls.append(dict(options or {}))
        return original(catalog, options)

    monkeypatch.setattr(settings_module, "resolve_options", counting)
    result = CliRunner().invoke(run, ["--option", "exploding-gradient.factor=20", "--no-progress",
                                      str(RUN / "whoami.py")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0]["exploding-gradient"] == {"factor": 20}


def test_the_budget_comes_from_the_command_line_then_the_configuration(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("")
    assert resolve_settings(RunOptions(), script).budget == 0.02
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nbudget = "off"\n')
    assert resolve_settings(RunOptions(), script).budget is None
    assert resolve_settings(RunOptions(budget="5%"), script).budget == 0.05
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nbudget = 0.1\n')
    settings = resolve_settings(RunOptions(), script)
    assert settings.budget == 0.1 and settings.audit_options["budget"] == 0.1


@pytest.mark.parametrize("given, file", [
    (["--budget", "2"], None),
    ([], "budget = 1.5\n"),
    ([], 'budget = "sometimes"\n'),
])
def test_a_bad_budget_is_one_line_and_exit_2(tmp_path, given, file):
    script = tmp_path / "train.py"
    script.write_text("")
    if file:
        (tmp_path / "pyproject.toml").write_text("[tool.torch-audit]\n" + file)
    result = CliRunner().invoke(run, [*given, "--no-progress", str(script)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "budget" in lines[0] and "Traceback" not in result.output


def test_the_api_takes_the_configured_budget(tmp_path, monkeypatch):
    import torch_audit

    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nbudget = "off"\n')
    monkeypatch.chdir(tmp_path)
    assert torch_audit.audit().budget is None
    assert torch_audit.audit(budget=0.1).budget == 0.1
    assert torch_audit.audit(config=False).budget == 0.02
    with pytest.raises(ValueError, match="budget: expected a fraction"):
        torch_audit.audit(config=False, budget=3)
