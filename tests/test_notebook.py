"""Jupyter notebooks in the linter: cells, IPython syntax, positions in every format,
suppressions, discovery, cache and ``--fix`` that rewrites only the changed cells."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from torch_audit.catalog import load_catalog
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source
from torch_audit.lint.notebook import apply_cell_edits, blank_magics, load

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "fixtures" / "notebooks"
MARKER = re.compile(r"#\s*error:\s*(?P<codes>[A-Z0-9, ]+)")


def settings():
    return LintSettings(rules=load_catalog().select(kind="static"))


def lint(path: Path, data: bytes | None = None):
    return lint_source(str(path), path.read_bytes() if data is None else data, settings())


def expected(path: Path) -> set[tuple[int, int, str]]:
    """(cell, line, code) of the ``# error:`` markers in the notebook's code cells."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = set()
    for index, cell in enumerate(nb["cells"], 1):
        if cell["cell_type"] != "code":
            continue
        for number, line in enumerate("".join(cell["source"]).splitlines(), 1):
            m = MARKER.search(line)
            if m:
                out |= {(index, number, c.strip()) for c in m.group("codes").split(",")}
    return out


def notebook(*cells: str | tuple[str, str], as_string: bool = False, language: str = "python") -> bytes:
    out = []
    for c in cells:
        kind, text = ("code", c) if isinstance(c, str) else c
        lines = text.splitlines(keepends=True)
        out.append({"cell_type": kind, "metadata": {}, "source": text if as_string else lines,
                    **({"outputs": [], "execution_count": None} if kind == "code" else {})})
    nb = {"cells": out, "metadata": {"language_info": {"name": language}}, "nbformat": 4, "nbformat_minor": 5}
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


# -- findings and positions ----------------------------------------------------------------------
def test_fixture_notebook_findings_match_the_markers():
    path = NOTEBOOKS / "train.ipynb"
    result = lint(path)
    got = {(f.cell, f.line, f.code) for f in result.findings}
    assert got == expected(path)
    assert len(expected(path)) >= 4  # the markers themselves are there
    # suppressions in cell 7 (ignore[...] and noqa) hid two TA311; the %%bash cell is not Python
    assert not any(f.cell in (7, 8) for f in result.findings)


def test_clean_notebook_is_silent():
    assert lint(NOTEBOOKS / "clean.ipynb").findings == []


def test_fixtures_are_up_to_date(tmp_path):
    """The committed notebooks are what make.py writes."""
    import runpy

    module = runpy.run_path(str(NOTEBOOKS / "make.py"))
    assert (NOTEBOOKS / "train.ipynb").read_text(encoding="utf-8") == module["notebook"](module["TRAIN"])
    assert (NOTEBOOKS / "clean.ipynb").read_text(encoding="utf-8") == module["notebook"](module["CLEAN"])


def test_messages_name_lines_of_the_cell():
    (ta101,) = [f for f in lint(NOTEBOOKS / "train.ipynb").findings if f.code == "TA101"]
    assert "(line 3)" in ta101.message  # the softmax is line 3 of the same cell


def test_cross_cell_analysis_and_message_lines():
    data = notebook(
        "import torch\nimport torch.nn.functional as F\nmodel = torch.nn.Linear(4, 3)\nx = torch.randn(2, 4)\n",
        ("markdown", "## train"),
        "probs = F.softmax(model(x), dim=-1)\n",
        "loss = F.cross_entropy(probs, torch.tensor([0, 1]))\n",
    )
    (f,) = [f for f in lint_source("n.ipynb", data, settings()).findings if f.code == "TA101"]
    assert (f.cell, f.line) == (4, 1)
    assert "line 1 of cell 3" in f.message


def test_text_json_sarif_github_positions(run_cli, tmp_path):
    shutil.copy(NOTEBOOKS / "train.ipynb", tmp_path / "nb.ipynb")
    text = run_cli("lint", "nb.ipynb", "--no-cache").stdout
    assert "nb.ipynb:cell 5:3:1: TA311" in text
    assert "nb.ipynb:cell 10:1:12: TA001" in text

    data = json.loads(run_cli("lint", "nb.ipynb", "--no-cache", "--output-format", "json").stdout)
    ta311 = [d for d in data if d["code"] == "TA311"]
    assert {(d["cell"], d["line"], d["column"], d["end_line"], d["end_column"]) for d in ta311} == {
        (5, 3, 1, 3, 13), (9, 2, 1, 2, 13)}
    # the fix edits are in the same cell coordinates
    assert ta311[0]["fix"]["edits"][0]["start_line"] == ta311[0]["line"]

    raw_lines = (tmp_path / "nb.ipynb").read_text(encoding="utf-8").splitlines()
    sarif = json.loads(run_cli("lint", "nb.ipynb", "--no-cache", "--output-format", "sarif").stdout)
    results = sarif["runs"][0]["results"]
    assert len(results) == len(data)
    for r in results:
        region = r["locations"][0]["physicalLocation"]["region"]
        raw = raw_lines[region["startLine"] - 1]
        if r["ruleId"] == "TA311":
            # the region points at the code inside the JSON string of the .ipynb file
            assert raw[region["startColumn"] - 1 :].startswith(("x.to(device)", "y.to(device)"))
            assert raw[region["startColumn"] - 1 : region["endColumn"] - 1] in ("x.to(device)", "y.to(device)")
        assert r["properties"]["cell"] in (5, 6, 9, 10)
        assert "fixes" not in r  # JSON-level replacements are not offered for notebooks
    import jsonschema  # a dev dependency

    schema_path = ROOT / "tests" / "data" / "sarif-schema-2.1.0.json"  # vendored (tests/data/README.md)
    jsonschema.validate(sarif, json.loads(schema_path.read_text(encoding="utf-8")))

    github = run_cli("lint", "nb.ipynb", "--no-cache", "--output-format", "github").stdout
    m = re.search(r"::error file=nb\.ipynb,line=(\d+),col=(\d+),.*title=TA101", github)
    assert m and raw_lines[int(m.group(1)) - 1][int(m.group(2)) - 1 :].startswith("F.cross_entropy")


def test_reporters_map_cells_without_reading_the_notebook(tmp_path):
    """Reporters are pure functions of the findings: the raw positions are computed at lint
    time (Finding.raw_region), survive the cache, and the file may be gone when rendering."""
    from torch_audit.findings import Finding
    from torch_audit.report import render

    path = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOKS / "train.ipynb", path)
    raw_lines = path.read_text(encoding="utf-8").splitlines()
    findings = lint(path).findings
    path.unlink()
    ta311 = [f for f in findings if f.code == "TA311"]
    assert ta311 and all(f.raw_region is not None for f in findings)
    line, column, _, end_column = ta311[0].raw_region
    assert raw_lines[line - 1][column - 1 : end_column - 1] in ("x.to(device)", "y.to(device)")
    again = Finding.from_dict(json.loads(json.dumps(ta311[0].to_cache())))
    assert again.raw_region == ta311[0].raw_region and "raw_region" not in ta311[0].to_dict()
    sarif = json.loads(render(ta311[:1], "sarif", root=tmp_path))
    region = sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (line, column)
    assert f"line={line},col={column}," in render(ta311[:1], "github")


def test_cache_keeps_cells(run_cli, tmp_path):
    shutil.copy(NOTEBOOKS / "train.ipynb", tmp_path / "nb.ipynb")
    (tmp_path / "pyproject.toml").write_text("[tool.torch-audit]\n")
    first = run_cli("lint", "nb.ipynb", "--output-format", "json").stdout
    second = run_cli("lint", "nb.ipynb", "--output-format", "json").stdout
    assert (tmp_path / ".torch_audit_cache").exists()
    assert first == second and '"cell": 5' in second


def test_a_cached_notebook_is_linted_again_when_a_module_it_imports_changes(run_cli, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.torch-audit]\n")
    net = tmp_path / "net.py"
    net.write_text("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                   "        super().__init__()\n        self.fc = nn.Linear(4, 3)\n\n    def forward(self, x):\n"
                   "        return torch.softmax(self.fc(x), dim=1)\n")
    (tmp_path / "nb.ipynb").write_bytes(notebook(
        "import torch\nfrom torch import nn\nfrom net import Net\n",
        "model = Net()\nx = torch.randn(2, 4)\ny = torch.tensor([0, 1])\nloss = nn.CrossEntropyLoss()(model(x), y)\n",
    ))
    assert "nb.ipynb:cell 2:4:8: TA101" in run_cli("lint", "nb.ipynb", "net.py").stdout
    net.write_text(net.read_text().replace("torch.softmax(self.fc(x), dim=1)", "self.fc(x)"))
    assert "TA101" not in run_cli("lint", "nb.ipynb", "net.py").stdout  # not the stale cached finding


def test_discovery_includes_notebooks_but_not_checkpoints(run_cli, tmp_path):
    (tmp_path / "pkg" / ".ipynb_checkpoints").mkdir(parents=True)
    bad = notebook("import torch\nx = torch.ones(2)\nx.to('cpu')\n")
    (tmp_path / "pkg" / "a.ipynb").write_bytes(bad)
    (tmp_path / "pkg" / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_bytes(bad)
    out = run_cli("lint", ".", "--no-cache").stdout
    assert "a.ipynb:cell 1:3:1: TA311" in out.replace("pkg/", "")
    assert "checkpoint" not in out


# -- IPython syntax ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, expected_code",
    [
        ("%matplotlib inline\nx = 1\n", "\nx = 1\n"),
        ("!pip install torch\n", "\n"),
        ("files = !ls -la\n", "files = ...\n"),
        ("t = %timeit -o f()\n", "t = ...\n"),
        ("torch.nn.Linear?\n??torch.load\n", "\n\n"),
        ("for i in range(2):\n    %time f(i)\n    !echo hi\n", "for i in range(2):\n    f(i)\n    pass\n"),
        ("%timeit -n 10 -r 3 f(x)\n", "f(x)\n"),
        ("%%bash\necho hi\nx.to('cpu')\n", "\n\n\n"),
        ("%%time\ny = f()\n", "\ny = f()\n"),
        # not magics: a line starting with % inside a string or a bracket is Python
        ('s = """\n%d items\n!important\n"""\n', 's = """\n%d items\n!important\n"""\n'),
        ("x = (a\n     % b)\n", "x = (a\n     % b)\n"),
        ("x = a \\\n    % b\n", "x = a \\\n    % b\n"),
        ("y = x  # really?\n", "y = x  # really?\n"),
    ],
)
def test_blank_magics(source, expected_code):
    code, changed, _ = blank_magics(source)
    assert code == expected_code
    assert code.count("\n") == source.count("\n")
    assert bool(changed) == (code != source)


def test_statement_magic_columns_map_back():
    data = notebook("import torch\nx = torch.ones(2)\n%time x.to('cpu')\n")
    (f,) = lint_source("n.ipynb", data, settings()).findings
    assert (f.code, f.cell, f.line, f.column) == ("TA311", 1, 3, 7)  # after "%time "


def test_syntax_error_in_one_cell_does_not_hide_the_others():
    data = notebook("import torch\nx = torch.ones(2)\n", "def broken(:\n", "x.to('cpu')\n")
    got = {(f.cell, f.line, f.code) for f in lint_source("n.ipynb", data, settings()).findings}
    assert got == {(2, 1, "TA001"), (3, 1, "TA311")}


def test_suppressions_in_cells():
    data = notebook(
        "# torch-audit: ignore-file[TA101]\nimport torch\nimport torch.nn.functional as F\n",
        "x = torch.ones(2)\nx.to('cpu')  # torch-audit: ignore[tensor-conversion-result-discarded]\n",
        "x.to('cpu')  # noqa: TA311\nx.to('cpu')\n",
        "F.cross_entropy(F.softmax(x, dim=-1), torch.tensor(0))\n",
    )
    got = {(f.cell, f.line, f.code) for f in lint_source("n.ipynb", data, settings()).findings}
    assert got == {(3, 2, "TA311")}


def test_source_as_one_string_and_non_python_and_broken_notebooks():
    data = notebook("import torch\nx = torch.ones(2)\nx.to('cpu')", as_string=True)
    (f,) = lint_source("n.ipynb", data, settings()).findings
    assert (f.cell, f.line) == (1, 3)
    r = notebook("import torch\nx.to('cpu')\n", language="R")
    assert lint_source("r.ipynb", r, settings()).findings == []
    for bad in (b'{"cells": [torch', b"torch", '{"cells": "torch"}'.encode(), b"\xff\xfe torch"):
        (f,) = lint_source("bad.ipynb", bad, settings()).findings
        assert f.code == "TA002" and "notebook" in f.message


def test_notebook_without_torch_is_skipped():
    result = lint_source("n.ipynb", notebook("print('hello')\n"), settings())
    assert result.skipped and result.findings == []


# -- fixing --------------------------------------------------------------------------------------
def test_fix_rewrites_only_changed_cells(run_cli, tmp_path):
    path = tmp_path / "nb.ipynb"
    shutil.copy(NOTEBOOKS / "train.ipynb", path)
    before_bytes = path.read_bytes()
    proc = run_cli("lint", "nb.ipynb", "--no-cache", "--fix")
    assert proc.returncode == 1  # TA101 and TA001 remain
    assert "Fixed 2 findings" in proc.stderr
    after_bytes = path.read_bytes()
    before, after = json.loads(before_bytes), json.loads(after_bytes)
    changed = [i for i, (a, b) in enumerate(zip(before["cells"], after["cells"])) if a != b]
    assert changed == [4, 8]  # cells 5 and 9
    assert after["cells"][4]["source"][2] == "x = x.to(device)  # error: TA311\n"
    assert after["cells"][8]["source"] == ["%%time\n", "y = y.to(device)  # error: TA311"]
    # outputs, metadata, the other cells: untouched, and byte for byte outside the two sources
    for a, b in zip(before["cells"], after["cells"]):
        assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
    assert before["metadata"] == after["metadata"]
    old_lines, new_lines = before_bytes.decode().splitlines(), after_bytes.decode().splitlines()
    assert len(old_lines) == len(new_lines)
    assert sum(a != b for a, b in zip(old_lines, new_lines)) == 2
    # the magics of the fixed cell are still there
    assert after["cells"][4]["source"][3:] == ["files = !ls\n", "torch.nn.Linear?"]
    again = run_cli("lint", "nb.ipynb", "--no-cache", "--output-format", "json")
    assert {d["code"] for d in json.loads(again.stdout)} == {"TA101", "TA001"}


def test_apply_cell_edits_is_exact_and_refuses_what_it_cannot_map():
    data = notebook("import torch\n%time x = 1\n", ("markdown", "hi"), "x.to('cpu')\ny = 2")
    nb = load(data)
    assert apply_cell_edits(data, nb.source) == data  # nothing changed: the same bytes
    fixed = nb.source.replace("x.to('cpu')", "x = x.to('cpu')")
    out = json.loads(apply_cell_edits(data, fixed))
    assert out["cells"][2]["source"] == ["x = x.to('cpu')\n", "y = 2"]  # no newline added at the end
    assert out["cells"][0]["source"] == ["import torch\n", "%time x = 1\n"]
    with pytest.raises(ValueError, match="cell boundaries"):
        apply_cell_edits(data, nb.source.replace("# %% torch-audit cell 3\n", ""))
    with pytest.raises(ValueError, match="IPython"):
        apply_cell_edits(data, nb.source.replace("x = 1", "x = 2"))  # the %time line
    # a string-valued source stays a string
    one = notebook("import torch\nx.to('cpu')", as_string=True)
    out = json.loads(apply_cell_edits(one, load(one).source.replace("x.to", "x = x.to")))
    assert out["cells"][0]["source"] == "import torch\nx = x.to('cpu')"
