"""Output formats checked by what consumes them: `full`'s source frames, `gitlab` against the
schema GitLab validates Code Quality reports with, `junit` read by a JUnit parser, SARIF's
helpUri and partialFingerprints, GitHub annotation paths under GITHUB_WORKSPACE."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from torch_audit.catalog import load_catalog
from torch_audit.cli import cli
from torch_audit.findings import Finding, Severity
from torch_audit.report import render, sarif_log

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
GITLAB_SEVERITIES = {"info", "minor", "major", "critical", "blocker"}  # GitLab's documentation

BAD = textwrap.dedent(
    """\
    import torch
    import torch.nn.functional as F


    def step(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)


    def other(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)
    """
)


def lint(cwd: Path, *args: str, env: dict[str, str] | None = None):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["lint", "--no-cache", "--jobs", "1", *args], catch_exceptions=False, env=env)
    finally:
        os.chdir(old)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BAD)
    return tmp_path


# -- full: source frames -------------------------------------------------------------------------

def test_full_shows_the_line_a_caret_under_the_span_and_the_help(project):
    out = lint(project, "--output-format", "full", "pkg").stdout.splitlines()
    assert out[:7] == [
        "pkg/bad.py:7:12: TA101 F.cross_entropy receives the output of a softmax (line 6); "
        "cross-entropy applies log_softmax itself",
        "  |",
        "7 |     return F.cross_entropy(probs, y)",
        "  |            ^^^^^^^^^^^^^^^^^^^^^^^^^ TA101",
        "  |",
        "  = help: Pass the logits (the input of the softmax) to the loss",
        "",
    ]
    # the second finding has a two-digit line: the gutter widens with it
    assert out[8:11] == ["   |", "12 |     return F.cross_entropy(probs, y)", "   |            ^^^^^^^^^^^^^^^^^^^^^^^^^ TA101"]
    assert not any("\x1b[" in line for line in out)  # not a terminal: plain


def test_full_frames_keep_tabs_under_tabs_and_survive_a_missing_file(tmp_path):
    (tmp_path / "t.py").write_text("if x:\n\ty = torch.softmax(z)\n")
    finding = Finding(code="TA106", name="softmax-without-dim", severity=Severity.WARNING, message="m",
                      path=str(tmp_path / "t.py"), line=2, column=6, end_line=2, end_column=19)
    lines = render([finding], "full", summary=False).splitlines()
    assert lines[2] == "2 | \ty = torch.softmax(z)"
    assert lines[3] == "  | \t    ^^^^^^^^^^^^^ TA106"
    gone = Finding(code="TA106", name="softmax-without-dim", severity=Severity.WARNING, message="m",
                   path=str(tmp_path / "gone.py"), line=2, column=1)
    assert render([gone], "full", summary=False).splitlines() == [f"{tmp_path / 'gone.py'}:2:1: TA106 m", ""]


def test_full_frames_a_notebook_cell_line(tmp_path, run_cli):
    cell = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
            "source": BAD.splitlines(keepends=True)}
    md = {"cell_type": "markdown", "metadata": {}, "source": ["# title"]}
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": [md, cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    out = run_cli("lint", "--no-cache", "--output-format", "full", "nb.ipynb").stdout.splitlines()
    assert out[0].startswith("nb.ipynb:cell 2:7:12: TA101")
    assert out[2] == "7 |     return F.cross_entropy(probs, y)"


def test_full_is_coloured_on_request_only(project):
    coloured = lint(project, "--output-format", "full", "pkg", env={"FORCE_COLOR": "1", "NO_COLOR": ""}).stdout
    assert "\x1b[" in coloured and "\x1b[34m|\x1b[0m" in coloured


# -- gitlab ---------------------------------------------------------------------------------------

def test_gitlab_report_passes_gitlab_s_schema_with_unique_fingerprints(project):
    report = json.loads(lint(project, "--output-format", "gitlab", "pkg").stdout)
    schema = json.loads((DATA / "gitlab-codeclimate.json").read_text(encoding="utf-8"))
    assert len(report) == 2
    for issue in report:
        jsonschema.validate(issue, schema)
        assert issue["severity"] in GITLAB_SEVERITIES
        assert issue["location"]["path"] == "pkg/bad.py"
        assert issue["check_name"] == "TA101" and issue["description"].startswith("TA101 ")
    assert [i["location"]["lines"]["begin"] for i in report] == [7, 12]
    assert len({i["fingerprint"] for i in report}) == 2  # two identical lines, two fingerprints


def test_gitlab_paths_are_relative_to_ci_project_dir(project):
    sub = project / "pkg"
    report = json.loads(lint(sub, "--output-format", "gitlab", "bad.py", env={"CI_PROJECT_DIR": str(project)}).stdout)
    assert report[0]["location"]["path"] == "pkg/bad.py"
    assert json.loads(lint(project, "--output-format", "gitlab", "pkg", "--select", "TA2").stdout) == []


# -- junit ----------------------------------------------------------------------------------------

def test_junit_is_read_by_a_junit_parser(project, tmp_path):
    junitparser = pytest.importorskip("junitparser")  # a dev dependency
    out = tmp_path / "report.xml"
    lint(project, "--output-format", "junit", "-o", str(out), "pkg")
    xml = junitparser.JUnitXml.fromfile(str(out))
    suites = list(xml)
    assert [s.name for s in suites] == ["pkg/bad.py"]
    cases = list(suites[0])
    assert [c.name for c in cases] == ["torch-audit.TA101", "torch-audit.TA101"]
    assert all(not c.is_passed and c.result[0].type == "error" for c in cases)
    assert "softmax" in cases[0].result[0].message
    assert suites[0].tests == 2 and suites[0].failures == 2

    clean = tmp_path / "clean.xml"
    lint(project, "--output-format", "junit", "-o", str(clean), "--select", "TA2", "pkg")
    cases = [c for s in junitparser.JUnitXml.fromfile(str(clean)) for c in s]
    assert len(cases) == 1 and cases[0].is_passed


def test_junit_survives_control_characters_in_messages():
    junitparser = pytest.importorskip("junitparser")
    finding = Finding(code="TA101", name="n", severity=Severity.ERROR, message="bad \x00\x1b byte", path="a.py", line=1, column=1)
    xml = junitparser.JUnitXml.fromstring(render([finding], "junit").split("\n", 1)[1])
    assert "bad" in next(iter(next(iter(xml)))).result[0].message


# -- sarif: helpUri and partialFingerprints ---------------------------------------------------------

def test_every_rule_descriptor_links_its_checked_in_page():
    findings = [
        Finding(code=r.code, name=r.name, severity=r.severity, message="m", path="a.py", line=1, column=1)
        for r in load_catalog().rules
    ]
    rules = sarif_log(findings, catalog=load_catalog())["runs"][0]["tool"]["driver"]["rules"]
    assert len(rules) == len(load_catalog().rules)
    for descriptor in rules:
        prefix = "https://github.com/torch-audit/torch-audit/blob/main/"
        assert descriptor["helpUri"].startswith(prefix)
        page = ROOT / descriptor["helpUri"][len(prefix):]
        assert page.is_file(), page
        assert page.read_text(encoding="utf-8").startswith(f"# {descriptor['name']} ({descriptor['id']})")


def _fingerprints(project: Path) -> list[str]:
    log = json.loads(lint(project, "--output-format", "sarif", "pkg").stdout)
    schema = json.loads((DATA / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    jsonschema.validate(log, schema)
    return [r["partialFingerprints"]["torchAudit/v1"] for r in log["runs"][0]["results"]]


def test_partial_fingerprints_follow_code_that_moves_and_change_with_it(project):
    first = _fingerprints(project)
    assert len(set(first)) == 2
    (project / "pkg" / "bad.py").write_text("# a comment\n\n" + BAD)  # every line moves down
    assert _fingerprints(project) == first
    # two identical lines are told apart by their order (as GitHub's own line hash does) ...
    distinct = BAD.replace("probs = torch.softmax(model(x), dim=1)\n    return F.cross_entropy(probs, y)\n",
                           "p = torch.softmax(model(x), dim=1)\n    return F.cross_entropy(p, y)\n", 1)
    assert distinct != BAD
    (project / "pkg" / "bad.py").write_text(distinct)
    before = _fingerprints(project)
    # ... a changed line gets a new fingerprint, the other keeps its own
    (project / "pkg" / "bad.py").write_text(distinct.replace("F.cross_entropy(p, y)", "F.cross_entropy(p, y, reduction='sum')"))
    after = _fingerprints(project)
    assert after[0] != before[0] and after[1] == before[1]


# -- github annotations ----------------------------------------------------------------------------

def test_github_annotation_paths_are_relative_to_the_workspace(project):
    sub = project / "pkg"
    plain = lint(sub, "--output-format", "github", "bad.py").stdout
    assert plain.startswith("::error file=bad.py,")
    in_actions = lint(sub, "--output-format", "github", "bad.py", env={"GITHUB_WORKSPACE": str(project)}).stdout
    assert in_actions.startswith("::error file=pkg/bad.py,line=7,")
    elsewhere = lint(sub, "--output-format", "github", "bad.py", env={"GITHUB_WORKSPACE": str(project / "other")}).stdout
    assert elsewhere.startswith("::error file=bad.py,")  # outside the workspace: as before
