"""Shared by the rule tests, static and runtime alike: find a rule's fixtures, run them, read
their markers, and compare snapshots of their findings.

Every test module imports these helpers the same way, ``from harness import ...`` (``tests/`` is
on ``sys.path`` because it is the root directory of the conftest files; ``tests/runtime/`` is a
package inside it). The conftest files hold pytest fixtures only."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

from torch_audit.catalog import load_catalog, slug_of
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
#: fixtures/runtime/<slug>/ of the runtime checks (folders starting with "_" are recipes)
RUNTIME_FIXTURES = FIXTURES / "runtime"
#: one snapshot file per rule: the full findings of its bad fixtures
RULE_SNAPSHOTS = ROOT / "tests" / "snapshots" / "rules"
UPDATE_SNAPSHOTS_COMMAND = (
    "UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -q -n 0 "
    "tests/test_rule_snapshots.py tests/runtime/test_rule_snapshots.py"
)
MARKER = re.compile(r"#\s*error:\s*(?P<codes>[A-Za-z0-9_,\s-]+?)\s*(?:$|#)")
#: rules that cannot have a triggering fixture (they report bugs in torch-audit itself)
NO_FIXTURES = {"internal-error"}


# -- static rules --------------------------------------------------------------------------------


def with_defaults(rule):
    defaults = load_catalog().select(kind="static")
    return [*defaults, rule] if rule not in defaults else defaults


def static_rules():
    return load_catalog().of_kind("static")


def fixture_dir(rule) -> Path:
    return FIXTURES / rule.kind / slug_of(rule)


def bad_fixtures(folder: Path) -> list[Path]:
    """``bad.py`` first, then the other ``bad_*.py`` files, by name."""
    return sorted(folder.glob("bad*.py"), key=lambda p: (p.name != "bad.py", p.name))


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


# -- runtime checks ------------------------------------------------------------------------------

#: Every default and preview runtime check; a fixture folder of an opt-in check adds that check.
ALL_CHECKS = ["ALL"]


def runtime_fixture_dirs() -> list[Path]:
    return sorted(p for p in RUNTIME_FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def expected_codes(path: Path) -> set[str]:
    """The codes of a runtime fixture's ``# expect: TA...`` lines."""
    codes: set[str] = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*#\s*expect:\s*(.*)$", line)
        if m:
            codes.update(re.findall(r"TA\d{3}", m.group(1)))
    return codes


def runtime_selection(path: Path) -> list[str]:
    """Every default and preview check, plus the folder's own check when it is opt-in."""
    own = [r.code for r in load_catalog().of_kind("runtime") if slug_of(r) == path.parent.name]
    return ALL_CHECKS + own


def run_fixture(path: Path, **kwargs):
    """Run a runtime fixture script under ``torch_audit.audit(...)``; returns the session."""
    import torch_audit

    kwargs.setdefault("select", runtime_selection(path))
    kwargs.setdefault("preview", True)
    with torch_audit.audit(**kwargs) as session:
        runpy.run_path(str(path), run_name="__main__")
    return session


# -- snapshots -----------------------------------------------------------------------------------


def snapshot_path(rule) -> Path:
    return RULE_SNAPSHOTS / f"{rule.code}-{rule.name}.txt"


def shown_path(path: str) -> str:
    """A path as a snapshot shows it: relative to the repository when it lies inside it."""
    if not path:
        return "<no source>"
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path


def _carets(line: str, finding) -> str:
    start = finding.column - 1
    end = finding.end_column - 1 if finding.end_line == finding.line else len(line.rstrip())
    width = max(1, min(end, len(line.rstrip())) - start)
    return " " * start + "^" * width + ("" if finding.end_line == finding.line else f" (to {finding.end_line}:{finding.end_column})")


def render_finding(finding, source_lines: list[str] | None = None, value: str | None = None) -> str:
    """One finding, the whole of it, as a snapshot shows it: the position and span, code,
    message, the source line with carets (static), the help, the fix and the related
    locations, and the runtime facts."""
    out = [f"{shown_path(finding.path)}:{finding.line}:{finding.column}: {finding.code} {finding.message}"]
    if source_lines is not None and 1 <= finding.line <= len(source_lines):
        line = source_lines[finding.line - 1].rstrip()
        out += [f"   | {line}", f"   | {_carets(line, finding)}"]
    out.append(f"  severity: {finding.severity.value}")
    out.append(f"  help: {finding.help}" if finding.help is not None else "  help: (none)")
    if finding.fix is not None:
        out.append(f"  fix ({finding.fix.applicability.value}): {finding.fix.description}")
    for path, line, what in finding.related:
        out.append(f"  related: {shown_path(path)}:{line}: {what}")
    facts = [(k, value if k == "value" and value is not None else v) for k, v in finding.runtime_facts()]
    if facts:
        out.append("  " + ", ".join(f"{k}={v}" for k, v in facts))
    return "\n".join(out)


def check_snapshot(path: Path, text: str) -> None:
    """Compare ``text`` with the snapshot file; ``UPDATE_SNAPSHOTS=1`` rewrites it instead
    (then review the diff, as Ruff's snapshots are reviewed)."""
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no snapshot {path.relative_to(ROOT)}: create it with {UPDATE_SNAPSHOTS_COMMAND}"
    old = path.read_text(encoding="utf-8")
    if old != text:
        import difflib

        diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True), "snapshot", "now"))
        raise AssertionError(
            f"{path.relative_to(ROOT)} differs from the findings (if the change is intended: "
            f"{UPDATE_SNAPSHOTS_COMMAND}, then review the diff):\n{diff}"
        )
