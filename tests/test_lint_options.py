"""LintOptions: the options of `torch-audit lint`, one frozen object validated once."""

from __future__ import annotations

import dataclasses

import pytest

from torch_audit.config import Config
from torch_audit.lint.options import LintOptions, OptionsError


def test_defaults_are_no_option_given():
    options = LintOptions()
    assert options.paths == (".",) and options.output_format == "text" and not options.fixing
    assert not any(options.given(f.name) for f in dataclasses.fields(options) if f.name not in ("paths", "output_format"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.fix = True  # type: ignore[misc]


def test_standard_input_is_read_for_a_dash_or_a_filename_without_paths():
    assert LintOptions.from_command_line(("-",)).stdin_filename == "-"
    named = LintOptions.from_command_line((), stdin_filename="src/a.py")
    assert named.stdin_filename == "src/a.py" and named.paths == ("src/a.py",)
    files = LintOptions.from_command_line(("a.py",), stdin_filename="b.py")
    assert files.stdin_filename is None and files.paths == ("a.py",)
    assert LintOptions.from_command_line(()).paths == (".",)


@pytest.mark.parametrize("kwargs,message", [
    ({"add_noqa": True, "fix": True}, "--add-noqa cannot be combined with --fix"),
    ({"baseline": "b.json", "write_baseline": "c.json"}, "--baseline cannot be combined with --write-baseline"),
    ({"add_noqa": True, "stdin_filename": "-"}, "--add-noqa needs files to edit, not standard input"),
    ({"torch_version": "two"}, '--torch-version expects a version like "2.4", got \'two\''),
    ({"output_format": "xml"}, "unknown output format 'xml'"),
    ({"fail_on": "fatal"}, "--fail-on expects one of info, warning, error"),
    ({"jobs": 0}, "--jobs expects a positive number"),
])
def test_invalid_options_are_refused_when_made(kwargs, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace("'", ".")):
        LintOptions(**kwargs)


def test_fix_with_diff_is_allowed_and_selectors_split():
    options = LintOptions(fix=True, diff=True, select=("TA1, TA2", "bias-before-norm"), ignore=["TA402"])
    assert options.fixing and options.selectors("select") == ["TA1", "TA2", "bias-before-norm"]
    assert options.ignore == ("TA402",)  # a list is kept as a tuple


def test_derived_settings_against_the_configuration():
    config = Config(exclude=["gen/"], extend_exclude=["old.py"], torch_version="2.1")
    assert LintOptions().excludes(config) == (["gen/"], ["old.py"])
    assert LintOptions(exclude=("x/",), extend_exclude=("y.py",)).excludes(config) == (["x/"], ["old.py", "y.py"])
    assert LintOptions().target_torch_version(config) == "2.1"
    assert LintOptions(torch_version="2.4").target_torch_version(config) == "2.4"
    assert LintOptions(torch_version="latest").target_torch_version(config) is None
