"""torch_audit.output: the one place for exit codes, the format list, writing a report, and the
exit decision (lint, --fix, --stdin-filename and run end there)."""

from __future__ import annotations

import pytest

from torch_audit.findings import Finding, Severity
from torch_audit.output import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    FORMATS,
    OutputError,
    exit_code,
    fail_level,
    write_output,
)


def _finding(severity: str) -> Finding:
    return Finding("TA101", "x", Severity(severity), "m", path="a.py")


def test_the_exit_decision(capsys):
    warning = [_finding("warning")]
    assert exit_code([]) == EXIT_OK
    assert exit_code(warning) == EXIT_FINDINGS  # by default any finding fails
    assert exit_code(warning, fail_on="error") == EXIT_OK
    assert exit_code(warning, exit_zero=True) == EXIT_OK
    assert capsys.readouterr().err == ""
    assert exit_code(warning, internal_errors=2) == EXIT_ERROR
    assert "2 internal error(s); run with --verbose" in capsys.readouterr().err
    assert exit_code([], internal_errors=1, verbose=True) == EXIT_ERROR  # the tracebacks said it
    assert capsys.readouterr().err == ""


def test_fail_levels_and_formats():
    assert fail_level(None) is Severity.INFO and fail_level("WARNING") is Severity.WARNING
    with pytest.raises(ValueError):
        fail_level("fatal")
    from torch_audit.report import FORMATS as report_formats

    assert report_formats is FORMATS


def test_write_output_makes_the_folder_and_reports_a_failure(tmp_path, capsys):
    target = tmp_path / "out" / "report.json"
    write_output("[]\n", str(target))
    assert target.read_text() == "[]\n" and capsys.readouterr().out == ""
    write_output("text\n", None)
    assert capsys.readouterr().out == "text\n"
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write .*file/report.json"):
        write_output("x", str(tmp_path / "file" / "report.json"))
