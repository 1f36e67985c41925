"""Snapshot tests of every output format on the bundled example.

Regenerate on purpose with `UPDATE_SNAPSHOTS=1 python -m pytest tests/test_snapshots.py`, then
read the diff; never edit a snapshot by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit import __version__

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
# The three foundation rules keep these snapshots stable while the catalogue grows.
SELECT = "TA101,TA201,TA301"


@pytest.mark.parametrize("fmt", ["text", "full", "json", "sarif", "github", "gitlab", "junit"])
def test_output_format_snapshot(fmt):
    out = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "--no-cache", "--select", SELECT,
         "--output-format", fmt, "fixtures/examples"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=120,
    )
    assert out.returncode == 1, out.stderr
    text = out.stdout.replace(__version__, "<version>")
    snapshot = SNAPSHOTS / f"examples.{fmt}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(text, encoding="utf-8")
    assert text == snapshot.read_text(encoding="utf-8")
