"""The rule harness: every static rule against its fixtures, compared exactly with the markers.

`fixtures/static/<slug>/bad.py` (and any `bad_*.py`) carries `# error: CODE` markers on the lines
where findings must start. `good.py` is the short, idiomatic "Use instead" example that
`torch-audit rule CODE` shows: it carries no markers and must be silent under every default rule,
not only the rule under test. The edge cases a careless rule would fire on live in `trap_*.py`:
the rule under test must stay silent on every line without a marker (a trap may keep a marked
positive control beside it; other rules may fire there)."""

from __future__ import annotations

import re

import pytest

from harness import NO_FIXTURES, expected_markers, fixture_dir, lint_fixture, static_rules, with_defaults

#: good.py is an example to read in `torch-audit rule CODE`, not a collection of edge cases
GOOD_MAX_LINES = 40

CASES = [
    pytest.param(rule, path, id=f"{rule.code}-{rule.name}/{path.name}")
    for rule in static_rules()
    if fixture_dir(rule).is_dir()
    for path in sorted(fixture_dir(rule).glob("*.py"))
    if not path.name.startswith("fix.")
]


@pytest.mark.parametrize("rule,path", CASES)
def test_rule_matches_fixture_markers(rule, path):
    result = lint_fixture(path, with_defaults(rule))
    assert result.internal_errors == 0, result.tracebacks
    got = {(f.line, f.code) for f in result.findings if f.code == rule.code}
    want = {(line, code) for line, code in expected_markers(path) if code == rule.code}
    assert got == want, "\n".join(f"{path.name}:{f.line}:{f.column}: {f.code} {f.message}" for f in result.findings)


@pytest.mark.parametrize("rule", [r for r in static_rules() if r.name not in NO_FIXTURES], ids=lambda r: r.name)
def test_rule_has_bad_and_good_fixtures(rule):
    folder = fixture_dir(rule)
    bad, good = folder / "bad.py", folder / "good.py"
    assert bad.is_file() and good.is_file(), f"{folder} needs bad.py and good.py"
    assert any(code == rule.code for _, code in expected_markers(bad)), "bad.py must mark a finding"
    assert not expected_markers(good), "good.py must be silent and carry no markers"
    lines = len(good.read_text(encoding="utf-8", errors="replace").strip().splitlines())
    assert 3 <= lines <= GOOD_MAX_LINES, (
        f"good.py has {lines} lines: it is the short 'Use instead' example of `torch-audit rule "
        f"{rule.code}`; move the edge cases into trap_*.py files"
    )
    for path in folder.glob("*.py"):
        assert re.fullmatch(r"(bad|good|bad_\w+|trap_\w+|fix\.(in|out|unsafe\.out))\.py", path.name), (
            f"{path.name}: fixtures are bad.py, bad_*.py, good.py, trap_*.py and fix.*.py"
        )


@pytest.mark.parametrize(
    "rule", [r for r in static_rules() if (fixture_dir(r) / "good.py").is_file()], ids=lambda r: r.name
)
def test_good_example_is_silent_under_every_default_rule(rule):
    """`torch-audit rule CODE` shows good.py as the right way to write the code: a finding of
    any default rule there would show users a bug as the fix."""
    good = fixture_dir(rule) / "good.py"
    result = lint_fixture(good, with_defaults(rule))
    assert result.internal_errors == 0, result.tracebacks
    assert result.findings == [], "\n".join(f"good.py:{f.line}:{f.column}: {f.code} {f.message}" for f in result.findings)


def test_bad_fixtures_are_found_with_all_default_rules_too():
    """Running every default rule together finds at least what each rule finds alone: the
    batched traversal must not let one rule disturb another."""
    from torch_audit.catalog import load_catalog

    catalog = load_catalog()
    defaults = catalog.select(kind="static")
    for rule in defaults:
        bad = fixture_dir(rule) / "bad.py"
        if not bad.is_file():
            continue
        together = {(f.line, f.code) for f in lint_fixture(bad, defaults).findings if f.code == rule.code}
        alone = {(f.line, f.code) for f in lint_fixture(bad, [rule]).findings}
        assert alone <= together, rule.name
