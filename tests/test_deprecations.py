"""The deprecation table and the version-aware rules that read it (TA601-TA605)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.catalog import load_catalog
from torch_audit.cli import cli
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source
from torch_audit.lint.facts import deprecations as dep

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "static"


def lint(code: str, *names: str, torch_version: str | None = None, path: str = "example.py"):
    catalog = load_catalog()
    rules = [catalog[n] for n in names]
    settings = LintSettings(rules=rules, torch_version=torch_version)
    result = lint_source(path, code.encode(), settings)
    assert result.internal_errors == 0, result.tracebacks
    return [(f.line, f.code) for f in result.findings]


# -- the table ------------------------------------------------------------------------------------


def test_table_is_valid_and_indexed():
    table = dep.load_table()
    assert len(table.entries) > 50
    names = {e.name for e in table.entries}
    for expected in ("torch.solve", "torch.qr", "torch.cuda.amp.GradScaler", "functorch.vmap",
                     "torch.utils.data._utils.collate.default_collate", "torchvision.transforms.v2.ToTensor"):
        assert expected in names
    for e in table.entries:
        assert e.kind in dep.KINDS
        assert e.reference.startswith("https://")
        assert e.replacement and e.note
        if e.drop_in and e.kind != "argument":
            # a fix swaps the name: the replacement must be a qualified name
            assert all(part.isidentifier() for part in e.replacement.split(".")), e
        if e.deprecated_in and e.removed_in:
            assert dep.parse_version(e.removed_in) > dep.parse_version(e.deprecated_in)


def test_table_is_loaded_once():
    dep.load_table.cache_clear()
    assert dep.load_table() is dep.load_table()


def _raw():
    return {"api": [{
        "name": "torch.frobnicate", "kind": "function", "deprecated-in": "2.1",
        "replacement": "torch.linalg.frobnicate", "drop-in": True, "note": "Renamed.",
        "reference": "https://example.org/frobnicate",
    }]}


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"kind": "method"}, "kind must be"),
        ({"deprecated-in": "two"}, "version string"),
        ({"removed-in": "2.0"}, "later than deprecated-in"),
        ({"reference": "http://insecure"}, "https URL"),
        ({"drop-in": "yes"}, "drop-in"),
        ({"colour": "red"}, "unknown keys"),
        ({"rule": "made-up-rule"}, "rule must be"),
        ({"name": "numpy.frobnicate"}, "is not in"),
        ({"replacement": "use something else", "drop-in": True}, "qualified name"),
        ({"kind": "argument"}, "'argument' is required"),
    ],
)
def test_table_schema_errors_are_reported(change, problem):
    raw = _raw()
    raw["api"][0].update(change)
    with pytest.raises(dep.TableError, match=problem):
        dep.build_table(raw)


def test_duplicate_entries_are_rejected():
    raw = _raw()
    raw["api"].append(copy.deepcopy(raw["api"][0]))
    with pytest.raises(dep.TableError, match="duplicate"):
        dep.build_table(raw)


def test_adding_an_entry_needs_no_code(monkeypatch):
    load_catalog()  # rule modules render their docs from the real table at import
    raw = _raw()
    table = dep.build_table(raw)
    monkeypatch.setattr(dep, "load_table", lambda: table)
    code = "import torch as t\nfrom torch import frobnicate\n\nt.frobnicate(1)\nf = t.frobnicate\n"
    assert lint(code, "deprecated-torch-api") == [(2, "TA602"), (4, "TA602"), (5, "TA602")]


# -- version filtering ----------------------------------------------------------------------------


def _entry(name):
    return next(e for e in dep.load_table().entries if e.name == name)


@pytest.mark.parametrize(
    "name, version, status",
    [
        ("torch.qr", None, "deprecated"),
        ("torch.qr", "1.8", None),
        ("torch.qr", "1.9", "deprecated"),
        ("torch.solve", None, "removed"),
        ("torch.solve", "1.13", "deprecated"),
        ("torch.solve", "2.0", "removed"),
        ("torch.lstsq", "1.12", "deprecated"),
        ("torch.lstsq", "1.13", "removed"),
        ("torch.solve", "1.8", None),
        ("torch.cuda.amp.autocast", "2.3", None),
        ("torch.cuda.amp.autocast", "2.4", "deprecated"),
        # torchvision 0.16 shipped with torch 2.1
        ("torchvision.transforms.v2.ToTensor", "2.0", None),
        ("torchvision.transforms.v2.ToTensor", "2.1", "deprecated"),
        ("torch.utils.data._utils.collate.default_collate", "1.0", "non-public"),
    ],
)
def test_status_by_torch_version(name, version, status):
    assert _entry(name).status(dep.target_version(version)) == status


def test_torchvision_versions_map_to_torch_releases():
    assert dep.torch_equivalent("torchvision", (0, 13, 0)) == (1, 12, 0)
    assert dep.torch_equivalent("torchvision", (0, 15, 0)) == (2, 0, 0)
    assert dep.torch_equivalent("torchvision", (0, 19, 0)) == (2, 4, 0)
    assert dep.torch_equivalent("torch", (2, 4, 0)) == (2, 4, 0)


AMP = "import torch\n\nwith torch.cuda.amp.autocast():\n    pass\n"
SOLVE = "import torch\n\nx = torch.solve(b, a)\n"
PRETRAINED = "import torchvision\n\nm = torchvision.models.resnet50(pretrained=True)\n"


def test_deprecated_after_configured_version_is_silent():
    assert lint(AMP, "deprecated-torch-api", torch_version="2.3") == []
    assert lint(AMP, "deprecated-torch-api", torch_version="2.4") == [(3, "TA602")]
    assert lint(AMP, "deprecated-torch-api") == [(3, "TA602")]


def test_removed_api_is_deprecated_before_its_removal():
    both = ("removed-torch-api", "deprecated-torch-api")
    assert lint(SOLVE, *both) == [(3, "TA601")]
    assert lint(SOLVE, *both, torch_version="1.12") == [(3, "TA602")]
    assert lint(SOLVE, *both, torch_version="1.8") == []


def test_argument_rule_is_version_aware():
    assert lint(PRETRAINED, "deprecated-torch-argument", torch_version="1.11") == []
    assert lint(PRETRAINED, "deprecated-torch-argument", torch_version="1.12") == [(3, "TA603")]


def test_torch_load_default_changed_in_2_6():
    code = "import torch\n\nstate = torch.load(path)\n"
    assert lint(code, "torch-load-without-weights-only") == [(3, "TA610")]
    assert lint(code, "torch-load-without-weights-only", torch_version="2.6") == []
    untrusted = "import sys\nimport torch\n\nstate = torch.load(sys.argv[1])\n"
    rules = ("torch-load-without-weights-only", "torch-load-of-untrusted-pickle")
    assert lint(untrusted, *rules) == [(4, "TA610")]
    assert lint(untrusted, *rules, torch_version="2.4") == [(4, "TA611")]
    assert lint(untrusted, *rules, torch_version="2.6") == []


def test_messages_name_version_and_replacement():
    catalog = load_catalog()
    settings = LintSettings(rules=[catalog["removed-torch-api"]])
    [finding] = lint_source("x.py", SOLVE.encode(), settings).findings
    assert "deprecated in torch 1.9, removed in 2.0" in finding.message
    assert "torch.linalg.solve" in finding.message


# -- qualified names ------------------------------------------------------------------------------


def test_aliases_and_own_functions():
    code = (
        "import torch as t\n"
        "from torch import qr as decompose\n"
        "\n"
        "t.qr(a)\n"
        "decompose(a)\n"
        "\n"
        "def qr(m):\n"
        "    return m\n"
        "\n"
        "qr(a)\n"
    )
    assert lint(code, "deprecated-torch-api") == [(2, "TA602"), (4, "TA602"), (5, "TA602")]


def test_reference_not_called_is_found_once():
    code = "import torch\n\nf = torch.qr\nf(a)\n"
    assert lint(code, "deprecated-torch-api") == [(3, "TA602")]


# -- configuration and documentation --------------------------------------------------------------



def test_cli_torch_version(tmp_path):
    runner = CliRunner()
    (tmp_path / "amp.py").write_text(AMP)
    target = str(tmp_path / "amp.py")
    old = runner.invoke(cli, ["lint", "--no-cache", "--select", "TA602", "--torch-version", "2.3", target])
    new = runner.invoke(cli, ["lint", "--no-cache", "--select", "TA602", "--torch-version", "2.4", target])
    latest = runner.invoke(cli, ["lint", "--no-cache", "--select", "TA602", "--torch-version", "latest", target])
    assert old.exit_code == 0, old.output
    assert new.exit_code == 1 and "TA602" in new.output
    assert "deprecated in torch 2.4" in new.output
    assert latest.exit_code == 1


def test_config_torch_version(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\ntorch-version = "2.3"\n')
    (tmp_path / "amp.py").write_text(AMP)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    configured = runner.invoke(cli, ["lint", "--no-cache", "--select", "TA602", "amp.py"])
    assert configured.exit_code == 0, configured.output
    override = runner.invoke(cli, ["lint", "--no-cache", "--select", "TA602", "--torch-version", "2.4", "amp.py"])
    assert override.exit_code == 1, override.output


def test_rule_page_shows_migration_notes():
    result = CliRunner().invoke(cli, ["rule", "TA602"])
    assert result.exit_code == 0
    assert "torch.linalg.qr" in result.output and "mode='complete'" in result.output
    removed = CliRunner().invoke(cli, ["rule", "removed-torch-api"])
    assert "torch.linalg.solve(A, B)" in removed.output
