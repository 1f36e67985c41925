"""The index of the static rules (``auditor/data/static_rules.json``): ``torch-audit run`` and
``torch_audit.audit()`` validate selectors and options that name static rules from it, without
importing the rules (and libcst). It must be current, and the catalogue it gives must answer
every question of selection and configuration exactly as the whole catalogue does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit import catalog as catalog_module
from torch_audit.catalog import (
    INDEX_COMMAND,
    INDEX_PATH,
    CatalogError,
    IndexedRule,
    Layer,
    UnknownSelector,
    index_text,
    indexed_static_rules,
    load_catalog,
    runtime_catalog,
)
from torch_audit.config import ConfigError, parse_table
from torch_audit.rule import Option, StaticRule

ROOT = Path(__file__).resolve().parent.parent


def test_the_index_is_current():
    assert INDEX_PATH.read_text(encoding="utf-8") == index_text(), f"stale rule index: {INDEX_COMMAND}"


def test_the_check_command_says_whether_the_index_is_current():
    done = subprocess.run([sys.executable, "-m", "torch_audit.catalog", "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_runtime_catalogue_holds_the_same_rules_with_the_same_declarations():
    full, fast = load_catalog(), runtime_catalog()
    assert [r.code for r in fast.rules] == [r.code for r in full.rules]
    assert len(set(fast.rules)) == len(fast.rules)  # hashable, by identity, as classes are
    for rule in full.rules:
        indexed = fast.get(rule.code)
        if rule.kind == "runtime":
            assert indexed is rule  # the check itself: the session instantiates it
            continue
        assert isinstance(indexed, IndexedRule)
        for attr in ("code", "name", "kind", "severity", "status", "opt_in", "fixable"):
            assert getattr(indexed, attr) == getattr(rule, attr), (rule.code, attr)
        assert indexed.options.keys() == rule.options.keys()
        # anything else reads through to the rule class, imported then
        assert indexed.message == rule.message and indexed.doc_sections() == rule.doc_sections()
        assert indexed.rule_class() is rule


SELECTORS = ["ALL", "all", "TA", "TA0", "TA1", "TA10", "TA6", "TA7", "TA8", "ta101", " TA101 ",
             "TA701", "softmax-before-cross-entropy", "Dead-Activations", "nonfinite-loss",
             # typos and unknowns: the error and its "did you mean" must be the same
             "TA10l", "TA1O1", "TA999", "TA9", "softmax", "bias-before-batchnorm", "exploding",
             "nonfinite", "", "TA7x", "frozen-params"]


@pytest.mark.parametrize("selector", SELECTORS)
def test_selectors_match_and_fail_as_with_the_whole_catalogue(selector):
    full, fast = load_catalog(), runtime_catalog()

    def answer(catalog):
        try:
            return ("ok", sorted(catalog.match(selector)))
        except UnknownSelector as exc:
            return ("error", str(exc))

    assert answer(fast) == answer(full)
    assert fast.suggestions(selector) == full.suggestions(selector)
    if selector:
        assert fast.specificity(selector) == full.specificity(selector)
        assert (fast.get(selector) is None) == (full.get(selector) is None)


LAYERS = [
    [],
    [Layer(None, (), ())],
    [Layer(("ALL",), (), ())],
    [Layer(("TA1", "TA7"), ("TA101",), ())],
    [Layer(None, ("TA7",), ("TA711", "tensor-data-attribute"))],
    [Layer(("TA101", "TA705"), ("TA1", "TA7"), ())],
    [Layer(("TA7", "TA8"), ("dead-activations",), ()), Layer(None, ("TA799",), ("TA712",))],
    [Layer(None, ("TA3",), ()), Layer(("ALL",), ("TA6",), ())],
]


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("preview", [False, True])
@pytest.mark.parametrize("kind", [None, "runtime", "static"])
def test_resolution_is_the_whole_catalogues(layers, preview, kind):
    full = load_catalog().resolve(layers, preview=preview, kind=kind)
    fast = runtime_catalog().resolve(layers, preview=preview, kind=kind)
    assert [r.code for r in fast.rules] == [r.code for r in full.rules]
    assert fast.ignored == full.ignored


TABLES = [
    {"select": ["TA1", "TA7"], "ignore": ["softmax-before-cross-entropy", "TA709"]},
    {"extend-select": ["tensor-data-attribute", "TA711"], "preview": True},
    {"per-file-ignores": {"tests/*": ["missing-eval-for-inference", "TA3"]}},
    {"options": {"exploding-gradient": {"factor": 20}, "TA709": {"window": 3}}},
    # errors: the same message, with the same suggestion
    {"ignore": ["TA10l"]},
    {"select": ["softmax"]},
    {"per-file-ignores": {"tests/*": ["bias-before-batchnorm"]}},
    {"options": {"softmax-before-cross-entropy": {"threshold": 1}}},
    {"options": {"no-such-rule": {"x": 1}}},
    {"options": {"exploding-gradient": {"factor": "big"}}},
    {"options": {"exploding-gradient": {"factr": 2.0}}},
]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: json.dumps(t))
def test_the_configuration_is_validated_as_with_the_whole_catalogue(table, tmp_path):
    def parsed(catalog):
        try:
            cfg = parse_table(table, catalog, where="pyproject.toml", prefix="tool.torch-audit",
                              root=tmp_path)
        except ConfigError as exc:
            return ("error", str(exc))
        return ("ok", cfg.select, cfg.ignore, cfg.extend_select, cfg.per_file_ignores, cfg.options,
                cfg.preview)

    assert parsed(runtime_catalog()) == parsed(load_catalog())


def test_a_missing_or_foreign_or_stale_index_falls_back_to_the_whole_catalogue(tmp_path, monkeypatch):
    data = json.loads(INDEX_PATH.read_text(encoding="utf-8"))
    fake = tmp_path / "static_rules.json"
    monkeypatch.setattr(catalog_module, "INDEX_PATH", fake)
    assert indexed_static_rules() is None  # missing
    fake.write_text("{not json")
    assert indexed_static_rules() is None
    fake.write_text(json.dumps({**data, "format": data["format"] + 1}))
    assert indexed_static_rules() is None  # another format
    fake.write_text(json.dumps({**data, "rules": data["rules"][1:]}))
    assert indexed_static_rules() is None  # a rule module on disk that the index does not know
    fake.write_text(json.dumps(data))
    assert indexed_static_rules() is not None

    fake.unlink()
    runtime_catalog.cache_clear()
    try:
        assert runtime_catalog() is load_catalog()
    finally:
        runtime_catalog.cache_clear()


def test_a_duplicate_between_the_index_and_the_runtime_checks_is_refused(tmp_path, monkeypatch):
    data = json.loads(INDEX_PATH.read_text(encoding="utf-8"))
    data["rules"][0] = {**data["rules"][0], "name": "nonfinite-loss"}
    fake = tmp_path / "static_rules.json"
    fake.write_text(json.dumps(data))
    monkeypatch.setattr(catalog_module, "INDEX_PATH", fake)
    runtime_catalog.cache_clear()
    try:
        with pytest.raises(CatalogError, match="duplicate rule code or name 'nonfinite-loss'"):
            runtime_catalog()
    finally:
        runtime_catalog.cache_clear()


def test_options_of_every_indexable_type_round_trip():
    class WithOptions(StaticRule):
        code = "TA999"
        name = "with-options"
        message = "m"
        options = {
            "factor": Option(2.0, "a float"),
            "count": Option(3, "an int"),
            "flag": Option(False, "a bool"),
            "label": Option("x", "a str"),
            "names": Option(("a", "b"), "a list", list),
            "number": Option(1, "int or float", (int, float)),
        }

    entry = json.loads(json.dumps(catalog_module._index_entry(WithOptions)))
    indexed = IndexedRule.from_entry({**entry, "module": __name__})
    for key, option in WithOptions.options.items():
        for value in (1, 2.5, True, "s", ["a"], {"k": 1}):
            try:
                expected = ("ok", option.check("with-options", key, value))
            except TypeError as exc:
                expected = ("error", str(exc))
            try:
                got = ("ok", indexed.options[key].check("with-options", key, value))
            except TypeError as exc:
                got = ("error", str(exc))
            assert got == expected, (key, value)

    class Odd(WithOptions):
        code = "TA998"
        name = "odd"
        options = {"when": Option(complex(1, 0), "no TOML value")}

    with pytest.raises(CatalogError, match="cannot be indexed"):
        catalog_module._index_entry(Odd)


_PROBE = """
import json, sys
from torch_audit.cli import main
try:
    main(["run", "--no-progress", *sys.argv[1:]])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _run_probe(tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    result = json.loads(done.stdout.splitlines()[-1])
    return result["code"], set(result["modules"]), done.stderr


def _static_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == "libcst" or m.startswith(("libcst.", "torch_audit.rules.static",
                                                                       "torch_audit.lint.")))


def test_run_validates_static_selectors_without_importing_the_static_rules(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-audit]\nselect = ["TA1", "TA7"]\nignore = ["softmax-before-cross-entropy"]\n'
        '[tool.torch-audit.per-file-ignores]\n"tests/*" = ["TA3"]\n'
    )
    (tmp_path / "train.py").write_text(
        "import torch\nm = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "m(torch.ones(3, 2)).sum().backward()\nopt.step()\n"
    )
    code, modules, stderr = _run_probe(tmp_path, "--output-format", "sarif", "-o", "out.sarif", "train.py")
    assert code == 0, stderr
    assert _static_modules(modules) == []
    assert "torch_audit.report.html" not in modules  # no --html, no HTML renderer
    assert json.loads((tmp_path / "out.sarif").read_text())["runs"][0]["results"] == []


def test_run_still_refuses_a_misspelt_static_rule_without_importing_it(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nignore = ["TA10l"]\n')
    (tmp_path / "train.py").write_text("print('ran')\n")
    code, modules, stderr = _run_probe(tmp_path, "train.py")
    assert code == 2
    assert "tool.torch-audit.ignore: unknown rule code, prefix or name 'TA10l' (did you mean 'TA101'" in stderr
    assert "ran" not in stderr
    assert _static_modules(modules) == []


def test_audit_reads_the_configuration_without_importing_the_static_rules(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nignore = ["TA101", "dead-activations"]\n')
    probe = (
        "import json, sys, torch, torch_audit\n"
        "with torch_audit.audit() as s:\n"
        "    torch.nn.Linear(2, 1)(torch.ones(1, 2)).sum().backward()\n"
        "print(json.dumps({'codes': s.selection.codes, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "TA709" not in result["codes"] and "TA701" in result["codes"]
    assert _static_modules(set(result["modules"])) == []


def test_the_index_ships_as_package_data():
    import fnmatch

    from torch_audit.tomlcompat import toml_parser

    pyproject = toml_parser().loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["torch_audit"]
    relative = INDEX_PATH.relative_to(ROOT / "auditor").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns
