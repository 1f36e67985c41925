"""The pytest plugin (loaded through its ``pytest11`` entry point) tested with ``pytester``."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

pytest_plugins = ["pytester"]

MODEL = '''
import pytest
import torch
import torch.nn.functional as F

from torch_audit.runtime.session import active_session


def train(bug=False, steps=2):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        if bug:  # the planted bug: probabilities into cross_entropy
            out = F.softmax(out, dim=-1)
        F.cross_entropy(out, y).backward()
        opt.step()
'''


def test_plugin_is_registered_through_its_entry_point(pytester):
    pytester.makepyfile(
        "def test_x(request):\n"
        "    assert request.config.pluginmanager.has_plugin('torch_audit')\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.torch_audit(fail_on=*"])


INNER = MODEL + '''
def test_fixture_sees_the_bug(torch_audit):
    assert active_session() is torch_audit.session
    train(bug=True)
    assert [f.code for f in torch_audit.findings] == ["TA707"]


def test_fixture_clean(torch_audit):
    train()
    assert torch_audit.findings == []


@pytest.mark.torch_audit(fail_on="error")
def test_marker_bug_fails():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="error")
def test_marker_clean_passes():
    train()


@pytest.mark.torch_audit
def test_marker_default_level_is_error():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="never")
def test_marker_never_only_reports():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="error", ignore=["probabilities-into-cross-entropy"])
def test_marker_ignore_is_passed_to_the_session():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="warning", select=["TA707"])
def test_marker_select_and_warning_level():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="error", config="relaxed.toml")
def test_marker_config_is_passed_to_the_session():
    train(bug=True)  # relaxed.toml ignores the check


@pytest.mark.torch_audit(fail_on="error", ignore=["TA7"], extend_select=["TA707"])
def test_marker_extend_select_names_a_check_back():
    train(bug=True)


@pytest.mark.torch_audit(fail_on="error")
def test_marker_with_fixture(torch_audit):
    train(bug=True)
    assert torch_audit.findings


@pytest.mark.torch_audit(fail_on="warning")
def test_marker_own_error_wins():
    train(bug=True)
    raise KeyError("the test's own failure")


def test_z_no_session_left_behind():
    assert active_session() is None
'''

EXPECTED = {
    "test_fixture_sees_the_bug": "PASSED",
    "test_fixture_clean": "PASSED",
    "test_marker_bug_fails": "FAILED",
    "test_marker_clean_passes": "PASSED",
    "test_marker_default_level_is_error": "FAILED",
    "test_marker_never_only_reports": "PASSED",
    "test_marker_ignore_is_passed_to_the_session": "PASSED",
    "test_marker_select_and_warning_level": "FAILED",
    "test_marker_config_is_passed_to_the_session": "PASSED",
    "test_marker_extend_select_names_a_check_back": "FAILED",
    "test_marker_with_fixture": "FAILED",
    "test_marker_own_error_wins": "FAILED",
    "test_z_no_session_left_behind": "PASSED",
}


def test_fixture_and_marker(pytester):
    # in a subprocess: an in-process run would unload and re-import torch between runs
    pytester.makepyfile(test_inner=INNER)
    (pytester.path / "relaxed.toml").write_text('ignore = ["probabilities-into-cross-entropy"]\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    outcomes = {}
    for line in result.stdout.lines:
        for word in ("PASSED", "FAILED"):
            if line.startswith(word + " test_inner.py::"):
                outcomes[line.split("::")[1].split()[0]] = word
    assert outcomes == EXPECTED, result.stdout.str()
    out = result.stdout.str()
    # the failure message lists the findings at or above the level
    result.stdout.fnmatch_lines(["*torch-audit found 1 finding(s) at or above 'error':*", "*TA707*"])
    summary = {line.split("::")[1].split()[0]: line for line in result.stdout.lines if line.startswith("FAILED test_inner.py::")}
    assert "torch-audit found" in summary["test_marker_bug_fails"]
    # the test's own error is reported, not replaced by the audit's
    assert "KeyError" in summary["test_marker_own_error_wins"]
    assert "torch-audit found" not in summary["test_marker_own_error_wins"]
    # findings appear as a report section, also for passing tests
    assert "Captured torch-audit call" in out


def test_bad_marker_arguments_are_a_usage_error(pytester):
    pytester.makepyfile(
        '''
import pytest

@pytest.mark.torch_audit("error")
def test_x():
    pass
'''
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*keyword arguments only*"]) if result.stderr.lines else \
        result.stdout.fnmatch_lines(["*keyword arguments only*"])


FINISH = MODEL + '''
from torch_audit.runtime.session import active_session


def train_with_an_unused_layer():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 2), "unused": torch.nn.Linear(4, 2)})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model["used"](torch.randn(3, 4)).sum().backward()
        opt.step()


@pytest.mark.torch_audit(select=["unused-parameter"], preview=True, fail_on="never")
def test_findings_include_checks_that_conclude_at_the_end(torch_audit):
    train_with_an_unused_layer()
    # unused-parameter concludes when the session ends: reading findings ends it
    assert [f.code for f in torch_audit.findings] == ["TA803"]
    assert active_session() is None


@pytest.mark.torch_audit(select=["unused-parameter"], preview=True, fail_on="never")
def test_finish_ends_the_audit_explicitly(torch_audit):
    train_with_an_unused_layer()
    found = torch_audit.finish()
    assert [f.code for f in found] == ["TA803"] and torch_audit.finish() == found
    train_with_an_unused_layer()  # no longer audited
    assert len(torch_audit.findings) == 1
'''


def test_the_fixture_finalises_checks_when_findings_are_read(pytester):
    # issue 17 item 8: `assert torch_audit.findings == []` passed while the report showed an
    # unused parameter, found only when the session ended
    pytester.makepyfile(test_finish=FINISH)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=2)


def test_a_marker_typo_is_reported_at_collection_before_any_test_runs(pytester):
    pytester.makepyfile(
        '''
import pytest

def test_first():
    open("ran.txt", "w").write("the body ran")

@pytest.mark.torch_audit(fail_on="eror")
def test_x():
    open("ran.txt", "w").write("the body ran")
'''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    text = result.stdout.str() + result.stderr.str()
    assert "test_x" in text and "fail_on must be one of error, warning, info, never, got 'eror'" in text


def test_a_marker_selecting_an_unknown_check_is_reported_at_collection(pytester):
    pytester.makepyfile(
        '''
import pytest

@pytest.mark.torch_audit(select=["nonfinite-los"])
def test_x():
    open("ran.txt", "w").write("the body ran")
'''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    assert "nonfinite-los" in result.stdout.str() + result.stderr.str()
