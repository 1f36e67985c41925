"""The fix harness: for every rule folder with `fixtures/static/<slug>/fix.in.py`, `--fix` must
give exactly `fix.out.py`, `--fix --unsafe-fixes` must give `fix.unsafe.out.py` (or `fix.out.py`
when there is none), and fixing the result again must change nothing.

Only the fixes of the rule under test are applied (every default rule still runs, for
suppressions); a fixture therefore does not change when another rule gains a fix."""

from __future__ import annotations

import pytest

from harness import fixture_dir, static_rules, with_defaults
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.autofix import applicable, fix_bytes

CASES = [
    pytest.param(rule, unsafe, id=f"{rule.code}-{rule.name}{'-unsafe' if unsafe else ''}")
    for rule in static_rules()
    if (fixture_dir(rule) / "fix.in.py").is_file()
    for unsafe in (False, True)
]


def _settings(rule) -> LintSettings:
    rules = with_defaults(rule)
    return LintSettings(rules=rules, report_unused_suppressions=any(r.name == "unused-suppression" for r in rules))


def _expected(rule, unsafe: bool) -> bytes:
    folder = fixture_dir(rule)
    if unsafe and (folder / "fix.unsafe.out.py").is_file():
        return (folder / "fix.unsafe.out.py").read_bytes()
    return (folder / "fix.out.py").read_bytes()


@pytest.mark.parametrize("rule,unsafe", CASES)
def test_fix_gives_expected_output(rule, unsafe):
    folder = fixture_dir(rule)
    assert (folder / "fix.out.py").is_file(), f"{folder} has fix.in.py but no fix.out.py"
    source = folder / "fix.in.py"
    settings = _settings(rule)
    first = fix_bytes(str(source), source.read_bytes(), settings, unsafe=unsafe, only={rule.code})
    assert first.internal_errors == 0, "\n".join([*first.tracebacks, *(f.message for f in first.findings)])
    got = first.fixed if first.fixed is not None else first.original
    want = _expected(rule, unsafe)
    assert got.decode() == want.decode()
    # a second run changes nothing, and leaves no applicable fix of this rule behind
    second = fix_bytes(str(source), got, settings, unsafe=unsafe, only={rule.code})
    assert second.fixed is None, "a second --fix changed the file again"
    assert not [f for f in second.findings if f.code == rule.code and applicable(f, unsafe)]


@pytest.mark.parametrize(
    "rule",
    [r for r in static_rules() if r.fixable != "never" and r.code >= "TA100"],
    ids=lambda r: r.name,
)
def test_fixable_rule_has_fix_fixtures(rule):
    folder = fixture_dir(rule)
    assert (folder / "fix.in.py").is_file() and (folder / "fix.out.py").is_file(), (
        f"{rule.name} is fixable: add {folder}/fix.in.py and fix.out.py"
    )


@pytest.mark.parametrize("rule", [r for r in static_rules() if r.fixable != "never"], ids=lambda r: r.name)
def test_fixable_rule_documents_fix_safety(rule):
    assert rule.doc_sections().get("Fix safety"), f"{rule.name} is fixable but has no '## Fix safety'"
