"""One harness over fixtures/runtime/*/: bad.py gives exactly the codes of its `# expect:` line,
good.py and every trap_*.py give none, with every default and preview runtime check enabled (plus
the folder's own check when it is opt-in). good.py is the short "Use instead" example of
`torch-audit rule CODE`, so it must not set off any other check either; the edge cases a careless
check would fire on (accumulation on purpose, frozen statistics, several optimizers) live in
trap_*.py."""

from __future__ import annotations

import pytest

from harness import expected_codes, lint_fixture, run_fixture, runtime_fixture_dirs
from torch_audit.catalog import load_catalog, slug_of

DIRS = runtime_fixture_dirs()
TRAPS = sorted(p for folder in DIRS for p in folder.glob("trap_*.py"))


@pytest.mark.parametrize("folder", DIRS, ids=lambda p: p.name)
def test_bad_fixture_reports_expected_codes(folder):
    bad = folder / "bad.py"
    expected = expected_codes(bad)
    assert expected, f"{bad} has no '# expect: TA...' line"
    session = run_fixture(bad)
    got = {f.code for f in session.findings}
    assert got == expected, session.report()


@pytest.mark.parametrize("folder", DIRS, ids=lambda p: p.name)
def test_good_fixture_is_silent(folder):
    session = run_fixture(folder / "good.py")
    assert session.findings == [], session.report()


@pytest.mark.parametrize("folder", DIRS, ids=lambda p: p.name)
def test_good_fixture_is_silent_under_every_default_static_rule(folder):
    """The linter's default rules are default rules too: a good.py shown as "Use instead" must
    not be code that `torch-audit lint` reports (a biased Linear before BatchNorm was)."""
    result = lint_fixture(folder / "good.py", load_catalog().select(kind="static"))
    assert result.internal_errors == 0, result.tracebacks
    assert result.findings == [], [f"{f.line}:{f.column}: {f.code} {f.message}" for f in result.findings]


@pytest.mark.parametrize("trap", TRAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_trap_fixture_is_silent(trap):
    session = run_fixture(trap)
    assert session.findings == [], session.report()


def test_runtime_fixture_files_are_named_bad_good_or_trap_and_good_is_short():
    for folder in DIRS:
        for path in folder.glob("*.py"):
            assert path.name in ("bad.py", "good.py") or path.name.startswith("trap_"), path
        lines = len((folder / "good.py").read_text().strip().splitlines())
        assert lines <= 40, f"{folder.name}/good.py has {lines} lines: move the edge cases into trap_*.py"


def test_every_runtime_check_has_fixtures():
    catalog = load_catalog()
    names = {p.name for p in DIRS}
    for rule in catalog.of_kind("runtime"):
        if rule.code == "TA799":
            continue  # internal errors are tested in test_session.py
        folder = DIRS[0].parent / slug_of(rule)
        assert slug_of(rule) in names, f"no fixtures/runtime/{slug_of(rule)}/ for {rule.code}"
        assert (folder / "good.py").is_file(), f"fixtures/runtime/{slug_of(rule)}/ has no good.py"
        assert rule.code in expected_codes(folder / "bad.py"), (
            f"fixtures/runtime/{slug_of(rule)}/bad.py does not expect {rule.code}"
        )
