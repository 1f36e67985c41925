"""Whole-program fixtures: multi-file projects under `fixtures/projects/<name>/`, linted together
as `torch-audit lint <name>` would, compared exactly with their `# error: CODE` markers.

Each case of the whole-program issue has a bad project and a correct twin (same layout, the bug
fixed) that must stay silent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import FIXTURES, expected_markers
from torch_audit.catalog import load_catalog
from torch_audit.lint.cache import Cache
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.runner import lint_files

PROJECTS = sorted(p for p in (FIXTURES / "projects").iterdir() if p.is_dir())


def _settings(**kw) -> LintSettings:
    return LintSettings(rules=load_catalog().select(kind="static"), **kw)


def _lint(files: list[Path], root: Path, **kw):
    results, warnings = lint_files(files, _settings(), **kw)
    assert not warnings
    found = set()
    for r in results:
        assert r.internal_errors == 0, r.tracebacks
        for f in r.findings:
            found.add((Path(f.path).relative_to(root).as_posix(), f.line, f.code))
    return found, results


def _markers(root: Path) -> set[tuple[str, int, str]]:
    return {
        (path.relative_to(root).as_posix(), line, code)
        for path in sorted(root.rglob("*.py"))
        for line, code in expected_markers(path)
    }


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_project_matches_markers(project, monkeypatch):
    monkeypatch.chdir(project)
    files = sorted(Path(".").rglob("*.py"))
    got, _ = _lint([project / f for f in files], project)
    assert got == _markers(project)


#: findings that rest on a call site in a file that is not named: with that file unnamed,
#: nobody is known to pass the object, and the finding is (correctly) not made
RESTS_ON_AN_UNNAMED_CALLER = {"gan_sigmoid_discriminator": "gan/main.py builds the trainer"}


@pytest.mark.parametrize("project", [p for p in PROJECTS if _markers(p)], ids=lambda p: p.name)
def test_one_changed_file_sees_the_rest_of_its_project(project, monkeypatch):
    """pre-commit names only the changed files: the modules they import are read and
    summarised, never reported on, and the findings of the named file are the same."""
    monkeypatch.chdir(project)
    markers = _markers(project)
    for rel in sorted({m[0] for m in markers}):
        got, results = _lint([project / rel], project)
        assert len(results) == 1
        want = {m for m in markers if m[0] == rel}
        assert got == (set() if project.name in RESTS_ON_AN_UNNAMED_CALLER else want)


def test_messages_name_the_evidence_and_the_call_site(monkeypatch):
    project = FIXTURES / "projects" / "gan_sigmoid_discriminator"
    monkeypatch.chdir(project)
    _, results = _lint(sorted(project.rglob("*.py")), project)
    messages = [f.message for r in results for f in r.findings]
    assert messages and all("Discriminator.__init__() in gan/nets.py:11" in m for m in messages), messages
    assert all("`GANTrainer(generator, Discriminator())` in gan/main.py:9" in m for m in messages), messages


def test_editing_a_module_relints_its_dependents_from_a_warm_cache(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    shutil.copytree(FIXTURES / "projects" / "softmax_across_files", project)
    monkeypatch.chdir(project)
    files = sorted(project.rglob("*.py"))
    cache = Cache(project, _settings().fingerprint("test"))
    first, _ = _lint(files, project, cache=cache)
    assert ("pkg/train.py", 13, "TA101") in first
    warm, _ = _lint(files, project, cache=Cache(project, _settings().fingerprint("test")))
    assert warm == first
    model = project / "pkg" / "model.py"
    model.write_text(model.read_text().replace("return F.softmax(self.out(h), dim=-1)", "return self.out(h)"))
    after, _ = _lint(files, project, cache=Cache(project, _settings().fingerprint("test")))
    assert ("pkg/train.py", 13, "TA101") not in after
    # and back: the dependent is re-linted again, the finding returns
    model.write_text(model.read_text().replace("return self.out(h)", "return F.softmax(self.out(h), dim=-1)"))
    again, _ = _lint(files, project, cache=Cache(project, _settings().fingerprint("test")))
    assert again == first


def test_a_name_defined_in_two_projects_resolves_to_each_scripts_own_module(monkeypatch):
    """Two projects linted together both have a top-level `layers.py`: each script imports
    its own (the script's directory comes first on sys.path)."""
    root = FIXTURES / "projects"
    monkeypatch.chdir(root)
    files = [root / d / f for d in ("helper_conv_with_bias", "helper_conv_without_bias") for f in ("layers.py", "resnet.py")]
    got, _ = _lint(files, root)
    assert {g[0].split("/")[0] for g in got} == {"helper_conv_with_bias"}


def test_without_whole_program_the_file_stands_alone(monkeypatch):
    project = FIXTURES / "projects" / "softmax_across_files"
    monkeypatch.chdir(project)
    results, _ = lint_files(sorted(project.rglob("*.py")), _settings(whole_program=False))
    assert not [f for r in results for f in r.findings]


def test_sarif_names_the_evidence_as_related_locations(monkeypatch):
    import json

    import jsonschema

    from torch_audit.report import render

    project = FIXTURES / "projects" / "gan_sigmoid_discriminator"
    monkeypatch.chdir(project)
    _, results = _lint(sorted(project.rglob("*.py")), project)
    findings = [f for r in results for f in r.findings]
    log = json.loads(render(findings, "sarif"))
    schema = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.validate(log, schema)
    related = log["runs"][0]["results"][0]["relatedLocations"]
    where = [(r["physicalLocation"]["artifactLocation"]["uri"], r["physicalLocation"]["region"]["startLine"]) for r in related]
    assert where == [("gan/nets.py", 11), ("gan/main.py", 9)]
    # json carries them too, and the cache keeps them
    assert json.loads(render(findings, "json"))[0]["related"][0] == {
        "path": "gan/nets.py", "line": 11, "message": "produced here (Discriminator.__init__())"}


def test_a_notebook_sees_the_local_modules_beside_it(monkeypatch):
    project = FIXTURES / "projects" / "notebook_sees_local_modules"
    monkeypatch.chdir(project)
    for named in (["analysis.ipynb"], ["analysis.ipynb", "models.py"]):
        results, _ = lint_files([project / n for n in named], _settings())
        found = [(f.cell, f.line, f.code) for r in results for f in r.findings]
        assert found == [(2, 3, "TA101")], found
        message = next(f.message for r in results for f in r.findings)
        assert "Classifier.__init__() in models.py:8" in message


def test_standard_input_sees_the_local_modules_it_imports():
    """An editor lints an unsaved buffer through --stdin-filename (the language server through
    the same project_of): the buffer's imports are read from disk."""
    import subprocess
    import sys

    project = FIXTURES / "projects" / "softmax_across_files"
    source = (project / "pkg" / "train.py").read_bytes()
    out = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "--no-cache", "--stdin-filename", "pkg/train.py"],
        cwd=project, input=source, capture_output=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert b"pkg/train.py:13:16: TA101" in out.stdout and b"Classifier.forward() in pkg/model.py:13" in out.stdout


def test_a_warm_cache_relints_nothing_whatever_the_cache_held_of_imported_modules(tmp_path, monkeypatch):
    """A module only imported is outlined on a cold run and may be summarised in full by a
    later one: the result that read its outline stays valid either way."""
    import torch_audit.lint.runner as runner

    project = tmp_path / "proj"
    shutil.copytree(FIXTURES / "projects" / "module_base_in_another_file", project)
    monkeypatch.chdir(project)
    linted = []
    original = runner.lint_source
    monkeypatch.setattr(runner, "lint_source", lambda name, *a, **k: linted.append(name) or original(name, *a, **k))
    train = [project / "export.py"]  # base.py is imported (its outline read), not named
    for _ in range(2):
        _lint(train, project, cache=Cache(project, _settings().fingerprint("test")))
    # linting base.py on its own stores its full summary in the cache
    _lint([project / "base.py"], project, cache=Cache(project, _settings().fingerprint("test")))
    linted.clear()
    _lint(train, project, cache=Cache(project, _settings().fingerprint("test")))
    assert linted == []


def test_a_new_caller_in_another_file_invalidates_the_cached_result(tmp_path, monkeypatch):
    """trainer.py's finding rests on main.py's construction of the trainer: a cached result
    made before main.py passed the discriminator is linted again once it does."""
    project = tmp_path / "proj"
    shutil.copytree(FIXTURES / "projects" / "gan_sigmoid_discriminator", project)
    monkeypatch.chdir(project)
    main = project / "gan" / "main.py"
    wired = main.read_text()
    main.write_text(wired.replace("GANTrainer(generator, Discriminator())", "None"))
    files = sorted(project.rglob("*.py"))
    cache = lambda: Cache(project, _settings().fingerprint("test"))  # noqa: E731
    before, _ = _lint(files, project, cache=cache())
    assert not [f for f in before if f[2] == "TA104"]
    main.write_text(wired)
    after, _ = _lint(files, project, cache=cache())
    assert {f for f in after if f[2] == "TA104"} == {("gan/trainer.py", 16, "TA104"), ("gan/trainer.py", 17, "TA104")}


def test_looking_for_callers_parses_only_the_modules_a_call_by_that_name_may_reach(tmp_path, monkeypatch):
    """Finding the callers of `fit` resolves the calls written `fit(...)`, not every call of the
    caller's file: the module main.py imports for its logging is not parsed while trainer.py is
    linted, although it is named too (in a library, resolving every call of every file that
    mentions a name outlined most of the modules those files import)."""
    from torch_audit.lint import project as project_module
    from torch_audit.lint.sources import lint_source

    (tmp_path / "trainer.py").write_text(
        "import torch.nn as nn\n\n\ndef fit(model, x, y):\n    return nn.CrossEntropyLoss()(model(x), y)\n"
    )
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.fc(x).softmax(dim=-1)\n"
    )
    (tmp_path / "chatter.py").write_text("def say(text):\n    print(text)\n")
    (tmp_path / "main.py").write_text(
        "import torch\nfrom chatter import say\nfrom net import Net\nfrom trainer import fit\n\n"
        "say('start')\nfit(Net(), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))\n"
    )
    monkeypatch.chdir(tmp_path)
    parsed = []
    original = project_module._SummaryStore.load_outline
    monkeypatch.setattr(
        project_module._SummaryStore, "load_outline", lambda self, path: parsed.append(path.name) or original(self, path)
    )
    trainer = tmp_path / "trainer.py"
    settings = _settings()
    named = [trainer, tmp_path / "main.py", tmp_path / "chatter.py"]
    settings.project = project_module.build_project(named, lint=[trainer])
    result = lint_source(str(trainer), trainer.read_bytes(), settings)
    assert [(f.line, f.code) for f in result.findings] == [(5, "TA101")]
    assert "net.py" in parsed and "chatter.py" not in parsed


def test_an_imported_module_is_parsed_once_across_runs_that_share_a_cache(tmp_path, monkeypatch):
    """pre-commit re-lints the edited file; the module it imports is outlined from the cache,
    and the findings are those of a run without one."""
    from torch_audit.lint import project as project_module

    project = tmp_path / "proj"
    shutil.copytree(FIXTURES / "projects" / "module_base_in_another_file", project)
    monkeypatch.chdir(project)
    parsed = []
    original = project_module._parse
    monkeypatch.setattr(project_module, "_parse", lambda data: parsed.append(data) or original(data))
    export = project / "export.py"
    cold, _ = _lint([export], project)
    cache = lambda: Cache(project, _settings().fingerprint("test"))  # noqa: E731
    assert _lint([export], project, cache=cache())[0] == cold
    export.write_text(export.read_text() + "\n# edited\n")
    parsed.clear()
    warm, _ = _lint([export], project, cache=cache())
    assert warm == cold and cold
    assert (project / "base.py").read_bytes() not in parsed


def _fit_project(root: Path) -> None:
    (root / "trainer.py").write_text(
        "import torch.nn as nn\n\n\ndef fit(model, x, y):\n    return nn.CrossEntropyLoss()(model(x), y)\n"
    )
    (root / "net.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.fc(x).softmax(dim=-1)\n"
    )
    (root / "main.py").write_text(
        "import torch\nfrom net import Net\nfrom trainer import fit\n\n"
        "fit(Net(), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))\n"
    )


@pytest.mark.parametrize("common", [False, True], ids=["rare name", "common name"])
def test_a_caller_that_stops_calling_takes_its_finding_along_from_a_warm_cache(tmp_path, monkeypatch, common):
    """main.py stops passing Net() to fit() but still mentions fit: trainer.py's cached finding,
    which rested on that call, must go (also for a name so common that its callers' contents
    are not stamped)."""
    import torch_audit.lint.project.model as model

    if common:
        monkeypatch.setattr(model, "_MAX_CALLER_STAMP", 0)
    _fit_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    files = [tmp_path / "trainer.py", tmp_path / "main.py", tmp_path / "net.py"]
    cache = lambda: Cache(tmp_path, _settings().fingerprint("test"))  # noqa: E731
    assert ("trainer.py", 5, "TA101") in _lint(files, tmp_path, cache=cache())[0]
    main = tmp_path / "main.py"
    main.write_text(main.read_text().replace("fit(Net(),", "print(fit, Net(),"))
    assert ("trainer.py", 5, "TA101") not in _lint(files, tmp_path, cache=cache())[0]


def test_a_caller_named_for_the_first_time_is_seen_although_both_results_are_cached(tmp_path, monkeypatch):
    """trainer.py and main.py were each linted alone before (both results cached); linted
    together, trainer.py's result must take main.py's call into account."""
    _fit_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    cache = lambda: Cache(tmp_path, _settings().fingerprint("test"))  # noqa: E731
    trainer, main = tmp_path / "trainer.py", tmp_path / "main.py"
    assert _lint([trainer], tmp_path, cache=cache())[0] == set()
    _lint([main], tmp_path, cache=cache())
    together, _ = _lint([trainer, main], tmp_path, cache=cache())
    assert together == _lint([trainer, main], tmp_path)[0]
    assert ("trainer.py", 5, "TA101") in together
