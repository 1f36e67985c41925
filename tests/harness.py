"""Shared by the static-rule tests: lint a fixture with one rule and read its markers."""

from __future__ import annotations

import re
from pathlib import Path

from torch_audit.catalog import load_catalog, slug_of
from torch_audit.lint.engine import LintSettings, lint_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MARKER = re.compile(r"#\s*error:\s*(?P<codes>[A-Za-z0-9_,\s-]+?)\s*(?:$|#)")
#: rules that cannot have a triggering fixture (they report bugs in torch-audit itself)
NO_FIXTURES = {"internal-error"}


def with_defaults(rule):
    defaults = load_catalog().select(kind="static")
    return [*defaults, rule] if rule not in defaults else defaults


def static_rules():
    return load_catalog().of_kind("static")


def fixture_dir(rule) -> Path:
    return FIXTURES / rule.kind / slug_of(rule)


def expected_markers(path: Path) -> set[tuple[int, str]]:
    expected = set()
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        m = MARKER.search(line)
        if m:
            for code in m.group("codes").split(","):
                if code.strip():
                    expected.add((number, code.strip()))
    return expected


def lint_fixture(path: Path, rules, options=None):
    """Lint with ``rules``, as ``torch-audit lint <path>`` would: the file is its own project
    (with the local modules it imports), so calls between its functions are linked. Other
    rules' findings matter to suppressions, so the harness passes the rule under test together
    with every default rule."""
    from torch_audit.lint.project import build_project

    settings = LintSettings(
        rules=list(rules),
        options=options or {},
        report_unused_suppressions=any(r.name == "unused-suppression" for r in rules),
        project=build_project([path]) if path.suffix == ".py" else None,
    )
    return lint_source(str(path), path.read_bytes(), settings)
