"""Fixes must never break code (issue 18, item 15; item 14 is the trap fixture
``fixtures/static/forward_called_directly/trap_hooks.py``).

A notebook's outputs and metadata are arbitrary JSON: an output that holds an object with a
``"cells"`` key (a notebook rendered into an output, a JSON payload) must not be taken for the
notebook's cells. ``--fix`` locates each cell's ``source`` through the parsed document.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit.lint.notebook import apply_cell_edits, load, raw_position

FIXABLE = "model = torch.nn.Linear(2, 2)\nmodel.eval()\nwith torch.no_grad():\n    out = model.forward(x)\n"
FIXED = FIXABLE.replace("model.forward(x)", "model(x)")
DECOY = {"cells": [{"cell_type": "code", "source": ["decoy = 1\n", "decoy = 2\n", "decoy = 3\n"]}] * 3}


def _code(source: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": outputs or [],
            "source": source.splitlines(keepends=True)}


def _decoy_output() -> dict:
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"application/json": [DECOY], "text/plain": ["{'cells': ...}"]}}


@pytest.mark.parametrize("where", ["a later cell's output", "the top-level metadata", "both"])
def test_fix_of_a_notebook_with_cells_inside_its_outputs_rewrites_the_real_cell(tmp_path, where):
    cells = [_code("import torch\n"), _code(FIXABLE), _code("print(1)\n")]
    metadata: dict = {"language_info": {"name": "python"}}
    if where in ("a later cell's output", "both"):
        cells[2]["outputs"] = [_decoy_output()]
    if where in ("the top-level metadata", "both"):
        metadata["history"] = [DECOY]
    nb = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "nb.ipynb", "--no-cache", "--fix"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    after = json.loads(path.read_text())
    assert "".join(after["cells"][1]["source"]) == FIXED
    # everything else as it was: the decoys and the other cells
    assert after["cells"][0] == cells[0] and after["cells"][2] == cells[2]
    assert after["metadata"] == metadata
    assert proc.returncode == 0, proc.stderr


def test_cells_are_located_through_the_document_not_by_their_key():
    cells = [_code("a = 1\n"), _code("b = 2\n", outputs=[_decoy_output()])]
    nb = {"cells": cells, "metadata": {"history": [DECOY]}, "nbformat": 4, "nbformat_minor": 5}
    data = (json.dumps(nb, indent=1) + "\n").encode()
    loaded = load(data)
    text = data.decode()
    for index, cell in enumerate(cells):
        span = loaded.spans[index]
        assert json.loads(text[span.start : span.end]) == cell["source"]
    # positions for SARIF point into the real cell
    line, _ = raw_position_of(data, cell=2, line=1, column=1)
    assert '"b = 2\\n"' in text.splitlines()[line - 1]
    # and the edit lands there
    fixed = apply_cell_edits(data, loaded.source.replace("b = 2", "b = 3"))
    assert [c["source"] for c in json.loads(fixed)["cells"]] == [["a = 1\n"], ["b = 3\n"]]
    assert json.loads(fixed)["metadata"] == nb["metadata"]


def test_a_repeated_cells_key_is_read_as_json_reads_it():
    """JSON keeps the last of two equal keys: so must the cell locations."""
    first = json.dumps([_code("old = 1\n"), _code("old = 2\n")])
    second = json.dumps([_code("new = 1\n")])
    data = ('{"cells": ' + first + ', "cells": ' + second + ', "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n').encode()
    loaded = load(data)
    assert loaded.source == "new = 1\n"
    fixed = apply_cell_edits(data, "new = 9\n")
    assert json.loads(fixed)["cells"][0]["source"] == ["new = 9\n"]
    assert '"old = 1\\n"' in fixed.decode()  # the shadowed list is left alone


def raw_position_of(data: bytes, *, cell: int, line: int, column: int) -> tuple[int, int]:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".ipynb", delete=False) as fh:
        fh.write(data)
    try:
        position = raw_position(fh.name, cell, line, column)
    finally:
        Path(fh.name).unlink()
    assert position is not None
    return position
