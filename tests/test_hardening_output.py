"""File names a repository may contain, in every output format (issue 18, item 12).

On Linux a file name is bytes: it may be invalid UTF-8 (Python holds such bytes as lone
surrogates, ``\\udcff``), or hold a newline. Every format must stay valid as that format (UTF-8
text, JSON, a SARIF URI), on stdout and with ``-o FILE``, and a newline in a name must not forge
a line that reads as another finding's path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="file names as arbitrary bytes")

SOURCE = b"import torch\n\n\ndef evaluate(model, x):\n    model.eval()\n    with torch.no_grad():\n        return model.forward(x)\n"
NOT_UTF8 = b"bad\xff.py"
NEWLINE = b"new\nline.py"
ENV = {**os.environ, "NO_COLOR": "1", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
FORMATS = ["text", "full", "json", "sarif", "github", "gitlab", "junit"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in (NOT_UTF8, NEWLINE, b"plain.py"):
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as fh:
            fh.write(SOURCE)
    return tmp_path


def lint(folder: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", ".", "--no-cache", "--jobs", "1", *args],
        cwd=folder, env=ENV, capture_output=True, timeout=120,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    return proc


def check_valid(fmt: str, raw: bytes) -> None:
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    if fmt in ("json", "sarif", "gitlab"):
        data = json.loads(text)
        assert data
    elif fmt == "junit":
        ET.fromstring(raw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_stays_valid_on_stdout_and_in_a_file(tree, fmt):
    proc = lint(tree, "--output-format", fmt)
    assert proc.returncode == 1, proc.stderr
    check_valid(fmt, proc.stdout)
    out = tree / f"report.{fmt}"
    proc = lint(tree, "--output-format", fmt, "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    check_valid(fmt, out.read_bytes())


def test_json_paths_round_trip_to_the_file_names_bytes(tree):
    """``\\udcff`` is a JSON escape: a consumer gets back the name's bytes with os.fsencode."""
    data = json.loads(lint(tree, "--output-format", "json").stdout.decode("utf-8"))
    assert {os.fsencode(f["path"]) for f in data} == {NOT_UTF8, NEWLINE, b"plain.py"}


def test_sarif_uris_percent_encode_the_bytes(tree):
    sarif = json.loads(lint(tree, "--output-format", "sarif").stdout.decode("utf-8"))
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in sarif["runs"][0]["results"]}
    assert uris == {"bad%FF.py", "new%0Aline.py", "plain.py"}


@pytest.mark.parametrize("fmt", ["text", "full"])
def test_a_newline_in_a_file_name_does_not_forge_a_finding_line(tree, fmt):
    lines = lint(tree, "--output-format", fmt).stdout.decode("utf-8").splitlines()
    assert not [ln for ln in lines if ln.startswith("line.py")], lines
    finding_lines = [ln for ln in lines if ": TA310 " in ln]
    assert len(finding_lines) == 3
    assert any(ln.startswith('"new\\nline.py":7:22:') for ln in finding_lines), finding_lines
    assert any(ln.startswith('"bad\\xff.py":7:22:') for ln in finding_lines), finding_lines
    assert any(ln.startswith("plain.py:7:22:") for ln in finding_lines), finding_lines
