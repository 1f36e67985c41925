"""Meta-tests: the catalogue, the docs and the packaging rules hold for every rule."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit.catalog import load_catalog, slug_of
from torch_audit.docs import readme_with_table, rule_page
from torch_audit.rule import REQUIRED_DOC_SECTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_catalogue_loads_and_codes_are_unique():
    catalog = load_catalog()
    codes = [r.code for r in catalog.rules]
    names = [r.name for r in catalog.rules]
    assert len(codes) == len(set(codes))
    assert len(names) == len(set(names))
    assert not set(codes) & set(names)
    assert {"softmax-before-cross-entropy", "bias-before-norm", "missing-eval-for-inference"} <= set(names)


@pytest.mark.parametrize("rule", load_catalog().rules, ids=lambda r: r.name)
def test_rule_declaration(rule):
    assert rule.metadata_problems() == []
    sections = rule.doc_sections()
    for section in REQUIRED_DOC_SECTIONS:
        assert sections.get(section), section
    assert rule.name.replace("-", "_") == slug_of(rule), "module named after the rule"
    assert rule.summary().endswith("."), "the first sentence of 'What it does' is the summary"
    page = rule_page(rule)
    assert rule.code in page and "## What it does" in page


def event_problems(check) -> list[str]:
    """Everything wrong with a runtime check's event declaration: ``validate_events`` (an unknown
    event, an event without its ``on_<event>``), and an ``on_<event>`` the check does not
    subscribe to (the session would never call it)."""
    from torch_audit.runtime.check import validate_events

    problems = validate_events(check)
    handlers = {name[len("on_"):] for name in dir(check) if name.startswith("on_") and callable(getattr(check, name))}
    for event in sorted(handlers - set(check.events)):
        problems.append(f"{check.__name__}: has on_{event} but does not subscribe to {event!r}")
    return problems


@pytest.mark.parametrize("check", load_catalog().of_kind("runtime"), ids=lambda r: r.name)
def test_runtime_check_declares_its_events(check):
    problems = event_problems(check)
    assert problems == [], f"{check.code} declares its events wrongly:\n" + "\n".join(problems)


def test_a_wrongly_declared_check_fails_the_event_meta_test():
    from torch_audit.runtime.check import RuntimeCheck

    class Broken(RuntimeCheck):
        code = "TA798"
        events = frozenset({"forwards", "backward"})  # a misspelt event; no on_backward

        def on_step_pre(self, *args):  # never subscribed: the session would never call it
            pass

    assert sorted(event_problems(Broken)) == [
        "Broken: has on_step_pre but does not subscribe to 'step_pre'",
        "Broken: subscribes to 'backward' but has no on_backward",
        "Broken: subscribes to 'forwards' but has no on_forwards",
        "Broken: unknown events ['forwards']",
    ]
    with pytest.raises(AssertionError, match="declares its events wrongly"):
        test_runtime_check_declares_its_events(Broken)


def test_rule_module_naming_follows_the_bad_pattern():
    """Rules are named after what is wrong (`SoftmaxBeforeCrossEntropy`), not after the act of
    looking for it (`CheckSoftmax`); a bad pattern that itself starts with such a word
    (`detect-anomaly-enabled`) is fine."""
    for rule in load_catalog().rules:
        camel = "".join(part.capitalize() for part in rule.name.split("-"))
        if rule.__name__.lower() == camel.lower():
            continue
        assert not re.match(r"(Check|Detect|Find)[A-Z]", rule.__name__), rule.__name__


def test_readme_rule_table_is_fresh():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_with_table(readme, load_catalog()) == readme, (
        "README rule table is stale: python -m torch_audit.docs --update-readme README.md"
    )


def _documented_runtime_options() -> dict[tuple[str, str], str]:
    """``(check, option) -> default`` from the options table of docs/runtime.md."""
    text = (ROOT / "docs" / "runtime.md").read_text(encoding="utf-8")
    table = text.split("### Options", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], str] = {}
    check = None
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        check = cells[0].strip("`") or check
        rows[(check, cells[1].strip("`"))] = cells[2].strip("`")
    return rows


def test_runtime_options_table_lists_every_option_with_its_default():
    documented = _documented_runtime_options()
    declared = {}
    for rule in load_catalog().of_kind("runtime"):
        for key, option in rule.options.items():
            default = option.default
            declared[(rule.name, key)] = str(default).lower() if isinstance(default, bool) else repr(default)
    assert documented == declared


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert readme.index(demo) < readme.index("torch-audit finds")
    assert "fixtures/examples" in demo and "lint" in demo
    assert "constraints.txt" in tests and "pytest" in tests
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command verbatim"


def _python_files():
    for folder in ("auditor", "rules", "tests", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_nothing_imports_top_level_rules_or_auditor():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("rules", "auditor", "fixtures"):
                    offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert offenders == []


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_lint_never_imports_torch_or_the_code_it_reads(tmp_path):
    target = tmp_path / "victim.py"
    target.write_text(
        "import torch\nimport torch.nn as nn\nimport numpy\n"
        "raise SystemExit('the linted code was executed')\n"
        "model = nn.Linear(2, 2)\nout = torch.softmax(model(x), 1)\n"
    )
    code = (
        "import sys\n"
        "from torch_audit.cli import main\n"
        "try:\n"
        f"    main(['lint', '--no-cache', '--jobs', '1', {str(target)!r}])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "bad = [m for m in ('torch', 'numpy', 'victim') if m in sys.modules]\n"
        "print('IMPORTED', bad, 'EXIT', code)\n"
    )
    out = _run_python(code, tmp_path)
    assert "IMPORTED [] EXIT" in out.stdout, out.stdout + out.stderr
    assert "the linted code was executed" not in out.stdout + out.stderr


def test_listing_the_catalogue_does_not_import_torch(tmp_path):
    out = _run_python(
        "import sys\nfrom torch_audit.catalog import load_catalog\nload_catalog()\n"
        "import torch_audit\nprint('torch' in sys.modules)",
        tmp_path,
    )
    assert out.stdout.strip() == "False", out.stderr


def test_static_engine_modules_never_import_torch():
    for path in [*(ROOT / "auditor" / "lint").rglob("*.py"), *(ROOT / "rules" / "static").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "torch" for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "torch", path


def test_pre_commit_hook_manifest():
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "id: torch-audit" in text and "entry: torch-audit lint" in text
    assert "language: python" in text


def test_rule_pages_are_checked_in_and_current():
    """docs/rules/<name>.md is each rule's SARIF helpUri: one page per rule, no page of a rule
    that is gone, each the catalogue's current text."""
    from torch_audit.docs import rule_pages

    expected = rule_pages(load_catalog())
    directory = ROOT / "docs" / "rules"
    present = {p.name for p in directory.glob("*.md")}
    assert present == set(expected), "stale rule pages: python -m torch_audit.docs --update-rule-pages docs/rules"
    stale = [name for name, text in expected.items() if (directory / name).read_text(encoding="utf-8") != text]
    assert stale == [], "stale rule pages: python -m torch_audit.docs --update-rule-pages docs/rules"


def test_licence_changelog_and_contributing_guide_are_there_and_agree():
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and 'license = { text = "MIT" }' in pyproject
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    test_command = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)[1]
    assert test_command in contributing  # the same way to run the tests as the README and CI
    for script in re.findall(r"benchmarks/[\w-]+\.(?:py|sh)", contributing):
        assert (ROOT / script).is_file(), script
    for command in re.findall(r"python -m torch_audit\.docs (--[\w-]+)", contributing):
        assert command in (ROOT / "auditor" / "docs.py").read_text(encoding="utf-8"), command
