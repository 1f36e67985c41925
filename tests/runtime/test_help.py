"""Runtime findings carry ``help`` too: the check's ``fix_title`` formatted with its fields."""

from __future__ import annotations

import json
import re
import string

import pytest
import torch
from torch import nn

import torch_audit
from torch_audit.catalog import load_catalog
from torch_audit.findings import Finding
from torch_audit.runtime import AuditFailure
from torch_audit.runtime.check import RuntimeCheck

from harness import RUNTIME_FIXTURES as FIXTURES, run_fixture
from harness import runtime_fixture_dirs as fixture_dirs


def _placeholders(title: str) -> set[str]:
    return {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(title) if f}


@pytest.mark.parametrize("folder", fixture_dirs(), ids=lambda p: p.name)
def test_every_runtime_finding_of_the_bad_fixtures_has_its_formatted_help(folder):
    catalog = load_catalog()
    session = run_fixture(folder / "bad.py")
    assert session.findings
    for f in session.findings:
        title = catalog[f.code].fix_title
        if title is None:
            assert f.help is None
            continue
        assert f.help, f"{f.code} has a fix_title but no help"
        assert not re.search(r"\{[A-Za-z_0-9]*[}!:.\[]", f.help), f.help
        assert not [n for n in _placeholders(title) if f"<{n}>" in f.help], f.help


def test_report_text_and_json_show_the_help():
    session = run_fixture(FIXTURES / "unused_parameter" / "bad.py")
    [finding] = session.findings
    help_ = load_catalog()["unused-parameter"].fix_title
    assert finding.help == help_
    lines = session.report().splitlines()
    assert lines[1] == f"  = help: {help_}" and lines[0].startswith(finding.path)  # as lint --output-format full
    assert lines[-1] == "Found 1 runtime finding."
    assert json.loads(session.to_json())[0]["help"] == help_


class _Probe(RuntimeCheck):
    """## What it does
    A check to call ``report`` on.

    ## Why is this bad?
    It is not.

    ## References
    - none
    """

    code = "TA898"
    name = "probe-check"
    message = "step {n} of {opt}"
    fix_title = "Look at `{opt}`, {missing}"


class _Session:
    """What RuntimeCheck.report needs of a session: de-duplication per subject, fail_fast."""

    def __init__(self) -> None:
        self.found: dict[str, Finding] = {}

    def add_finding(self, check, subject, message, **_):
        if subject in self.found:
            self.found[subject].count += 1
            return self.found[subject]
        finding = self.found[subject] = Finding(check.code, check.name, check.severity, message)
        if subject == "fatal":
            raise AuditFailure(finding)
        return finding


def test_check_report_formats_help_and_survives_missing_fields():
    probe = _Probe(_Session())
    first = probe.report("step", opt="SGD", n=0)
    again = probe.report("step", opt="Adam", n=1)
    assert again is first and first.count == 2
    assert (first.message, first.help) == ("step 0 of SGD", "Look at `SGD`, <missing>")
    other = probe.report("other", message="explicit", help="explicit help")
    assert (other.message, other.help) == ("explicit", "explicit help")
    with pytest.raises(AuditFailure) as info:
        probe.report("fatal", opt="AdamW", n=2)
    assert info.value.finding.help == "Look at `AdamW`, <missing>"


def test_fail_fast_failure_carries_the_help():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    x[0, 0] = float("nan")
    with pytest.raises(AuditFailure) as info:
        with torch_audit.audit(fail_fast=True):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    finding = info.value.finding
    assert finding.help == load_catalog()[finding.code].fix_title
