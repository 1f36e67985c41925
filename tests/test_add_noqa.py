"""`torch-audit lint --add-noqa`: every current finding gets a suppression the linter honours;
a second run changes nothing; code, comments and notebooks survive."""

from __future__ import annotations

import ast
import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.cli import cli
from torch_audit.findings import Finding, Severity
from torch_audit.lint.add_noqa import add_suppressions

HEADER = "import torch\nimport torch.nn.functional as F\n\n\n"


def lint(*args, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["lint", "--no-cache", "--jobs", "1", *map(str, args)], catch_exceptions=False)
    finally:
        os.chdir(old)


def adopt(tmp_path: Path, name: str, body: str) -> tuple[str, str]:
    """Write ``body`` (after the imports), run --add-noqa twice; the text after the first run."""
    path = tmp_path / name
    path.write_bytes((HEADER + textwrap.dedent(body)).encode())
    before = lint(name, cwd=tmp_path)
    assert before.exit_code == 1, before.output  # the test needs a finding to suppress
    first = lint("--add-noqa", name, cwd=tmp_path)
    assert first.exit_code == 0, first.output
    after = path.read_text()
    assert lint(name, cwd=tmp_path).exit_code == 0, lint(name, cwd=tmp_path).output
    second = lint("--add-noqa", name, cwd=tmp_path)
    assert second.exit_code == 0
    assert path.read_text() == after, "a second --add-noqa changed the file"
    assert "Added 0 suppressions" in second.output
    ast.parse(after)
    return after, first.output


def test_comment_on_the_finding_line(tmp_path):
    after, out = adopt(tmp_path, "a.py", """\
        def step(model, x, y):
            probs = torch.softmax(model(x), dim=1)
            return F.cross_entropy(probs, y)
        """)
    assert "    return F.cross_entropy(probs, y)  # torch-audit: ignore[TA101]\n" in after
    assert "Added 1 suppression to 1 file." in out


def test_existing_comments_are_kept_and_directives_merged(tmp_path):
    after, _ = adopt(tmp_path, "a.py", """\
        def step(model, x, y):
            probs = torch.softmax(model(x), dim=1)
            return F.cross_entropy(probs, y)  # noqa: E501 keep me


        def other(x):
            y = F.softmax(F.softmax(x, dim=1))  # torch-audit: ignore[TA999]
            return y
        """)
    assert "return F.cross_entropy(probs, y)  # noqa: E501 keep me  # torch-audit: ignore[TA101]\n" in after
    assert "y = F.softmax(F.softmax(x, dim=1))  # torch-audit: ignore[TA999, TA106]\n" in after


def test_line_ending_inside_a_string_or_after_a_backslash(tmp_path):
    after, _ = adopt(tmp_path, "a.py", '''\
        def step(model, x, y):
            probs = torch.softmax(model(x), dim=1)
            loss = F.cross_entropy(probs, y, reduction="""mean
            """.strip())
            other = F.cross_entropy(probs, \\
                y)
            return loss + other
        ''')
    lines = after.splitlines()
    # not inside the string (that would change the program), but on the statement's last line
    assert '    loss = F.cross_entropy(probs, y, reduction="""mean' in lines
    assert '    """.strip())  # torch-audit: ignore[TA101]' in lines
    # never after a backslash (a syntax error)
    assert "    other = F.cross_entropy(probs, \\" in lines
    assert "        y)  # torch-audit: ignore[TA101]" in lines


def test_a_decorator_is_suppressed_on_its_def_line(tmp_path):
    after, _ = adopt(tmp_path, "a.py", """\
        class Square(torch.autograd.Function):
            @staticmethod
            @torch.cuda.amp.custom_fwd
            def forward(ctx, x):
                return x * x
        """)
    assert "    def forward(ctx, x):  # torch-audit: ignore[TA602]\n" in after


def test_crlf_and_no_final_newline_are_kept(tmp_path):
    path = tmp_path / "a.py"
    source = "import torch\r\nimport torch.nn.functional as F\r\n\r\ny = F.softmax(torch.ones(3))"
    path.write_bytes(source.encode())
    assert lint("--add-noqa", "a.py", cwd=tmp_path).exit_code == 0
    assert path.read_bytes() == (source + "  # torch-audit: ignore[TA106]").encode()
    path.write_bytes((source + "\r\nz = 1\r\n").encode())
    assert lint("--add-noqa", "a.py", cwd=tmp_path).exit_code == 0
    assert path.read_bytes() == (source + "  # torch-audit: ignore[TA106]\r\nz = 1\r\n").encode()


def test_per_file_ignores_and_selection_are_respected(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-audit]\nper-file-ignores = { "skip.py" = ["TA106"] }\n'
    )
    body = HEADER + "y = F.softmax(torch.ones(3))\n"
    (tmp_path / "skip.py").write_text(body)
    (tmp_path / "keep.py").write_text(body)
    assert lint("--add-noqa", ".", cwd=tmp_path).exit_code == 0
    assert (tmp_path / "skip.py").read_text() == body
    assert (tmp_path / "keep.py").read_text().endswith("  # torch-audit: ignore[TA106]\n")
    (tmp_path / "sel.py").write_text(body)
    assert lint("--add-noqa", "--select", "TA101", "sel.py", cwd=tmp_path).exit_code == 0
    assert (tmp_path / "sel.py").read_text() == body


def test_notebook_cells_are_written_through_the_json(tmp_path):
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
        {"cell_type": "code", "execution_count": 3, "metadata": {"tags": ["x"]},
         "outputs": [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
         "source": ["import torch\n", "import torch.nn.functional as F\n", "%matplotlib inline\n"]},
        {"cell_type": "code", "execution_count": 4, "metadata": {}, "outputs": [],
         "source": ["probs = torch.softmax(torch.ones(2, 3), dim=1)\n",
                    "loss = F.cross_entropy(probs, torch.zeros(2).long())"]},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb, indent=1) + "\n")
    assert lint("n.ipynb", cwd=tmp_path).exit_code == 1
    assert lint("--add-noqa", "n.ipynb", cwd=tmp_path).exit_code == 0
    new = json.loads(path.read_text())
    assert new["cells"][2]["source"] == [
        "probs = torch.softmax(torch.ones(2, 3), dim=1)\n",
        "loss = F.cross_entropy(probs, torch.zeros(2).long())  # torch-audit: ignore[TA101]",
    ]
    expected = json.loads(json.dumps(nb))
    expected["cells"][2]["source"] = new["cells"][2]["source"]
    assert new == expected  # outputs, metadata, magics and other cells untouched
    assert lint("n.ipynb", cwd=tmp_path).exit_code == 0
    text = path.read_text()
    assert lint("--add-noqa", "n.ipynb", cwd=tmp_path).exit_code == 0
    assert path.read_text() == text


def test_engine_findings_are_left_alone(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\ndef f(:\n")
    assert lint("--add-noqa", "broken.py", cwd=tmp_path).exit_code == 0
    assert (tmp_path / "broken.py").read_text() == "import torch\ndef f(:\n"


def test_add_noqa_cannot_be_combined_with_fix(tmp_path):
    result = lint("--add-noqa", "--fix", ".", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == "torch-audit: error: --add-noqa cannot be combined with --fix"


def _finding(line, statement):
    return Finding("TA101", "softmax-before-cross-entropy", Severity.ERROR, "m", "p.py", line, 1,
                   statement_lines=statement)


def test_two_findings_on_one_line_give_one_sorted_directive():
    source = "a = 1\nb = (2,\n  3)\n"
    other = Finding("TA106", "softmax-without-dim", Severity.WARNING, "m", "p.py", 2, 1, statement_lines=(2, 3))
    new, added, missed = add_suppressions(source, [other, _finding(2, (2, 3))])
    assert (new, added, missed) == ("a = 1\nb = (2,  # torch-audit: ignore[TA101, TA106]\n  3)\n", 2, [])


def test_cached_findings_keep_their_statement_lines(tmp_path):
    # the second run reads the findings from the cache: the placement must not change
    body = HEADER + "def step(model, x, y):\n    probs = torch.softmax(model(x), dim=1)\n" \
        "    other = F.cross_entropy(probs, \\\n        y)\n    return other\n"
    (tmp_path / "a.py").write_text(body)
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert runner.invoke(cli, ["lint", "--jobs", "1", "a.py"]).exit_code == 1
        assert runner.invoke(cli, ["lint", "--jobs", "1", "--add-noqa", "a.py"]).exit_code == 0
    finally:
        os.chdir(old)
    assert "        y)  # torch-audit: ignore[TA101]\n" in (tmp_path / "a.py").read_text()


def test_an_internal_error_is_exit_2_and_the_rest_is_suppressed(tmp_path, monkeypatch):
    import torch_audit.rules.static.bias_before_norm as victim

    def boom(self, node):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(victim.BiasBeforeNorm, "leave_Module", boom)
    (tmp_path / "a.py").write_text(HEADER + "def step(model, x, y):\n    probs = torch.softmax(model(x), dim=1)\n"
                                   "    return F.cross_entropy(probs, y)\n")
    result = lint("--add-noqa", "a.py", cwd=tmp_path)
    assert result.exit_code == 2
    assert "1 internal error(s)" in result.output
    assert "    return F.cross_entropy(probs, y)  # torch-audit: ignore[TA101]\n" in (tmp_path / "a.py").read_text()
