"""Property-based fuzzing of the linter (and the fixer): it never raises, never reports an
internal error (TA003), and the CLI always ends with exit code 0 or 1 on readable input.

Inputs: programs generated from Python's grammar (hypothesmith), and our own fixtures mutated
(lines deleted, duplicated, swapped, re-indented, wrapped in a block; random bytes inserted or
overwritten; truncated) so that every rule sees broken and oddly-shaped torch code.

This is the fast CI profile: small ``max_examples``, derandomized so a CI run is repeatable.
``benchmarks/fuzz_long.py`` runs the same properties with many more examples and a random seed.
All in-process lints use every static rule, including preview and opt-in ones, with the
"mentions torch" prefilter switched off so that nothing is skipped.
"""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import hypothesmith
import libcst as cst
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_audit.catalog import load_catalog
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.sources import lint_source

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_FILES = sorted(p for p in (ROOT / "fixtures").rglob("*.py") if "__pycache__" not in p.parts)
FIXTURE_BYTES = [p.read_bytes() for p in FIXTURE_FILES]

#: ``TORCH_AUDIT_FUZZ_EXAMPLES`` scales every profile (benchmarks/fuzz_long.py sets it).
SCALE = float(os.environ.get("TORCH_AUDIT_FUZZ_SCALE", "1"))
DERANDOMIZE = os.environ.get("TORCH_AUDIT_FUZZ_RANDOM") != "1"


def fuzz_settings(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class _NoPrefilter(LintSettings):
    """Every file is analysed, whether it mentions torch or not."""

    @property
    def triggers(self) -> tuple[bytes, ...]:
        return (b"",)


def all_rules_settings() -> LintSettings:
    rules = load_catalog().of_kind("static")
    return _NoPrefilter(rules=rules, verbose=True, report_unused_suppressions=True)


SETTINGS = all_rules_settings()


def check_lint(data: bytes, path: str = "fuzzed.py"):
    """Lint ``data`` and assert the invariants every input must satisfy."""
    result = lint_source(path, data, SETTINGS)  # must not raise
    internal = [f for f in result.findings if f.code == "TA003"]
    assert not internal and result.internal_errors == 0, (
        "internal error:\n" + "\n".join(f.message for f in internal) + "\n" + "\n".join(result.tracebacks)
    )
    # \n, \r\n and a lone \r all end a line for Python (a CRLF counted twice only loosens this)
    n_lines = data.count(b"\n") + data.count(b"\r") + 1
    for f in result.findings:
        assert f.path == path
        assert 1 <= f.line <= n_lines + 1, (f, n_lines)
        assert f.column >= 1, f
        if f.end_line is not None:
            assert f.end_line >= f.line, f
    return result


def cpython_compiles(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, "<fuzz>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


# -- generated programs ---------------------------------------------------------------------------


@fuzz_settings(40)
@given(hypothesmith.from_grammar())
def test_grammar_programs_never_crash_the_linter(source):
    text = source + "\nimport torch\n"
    result = check_lint(text.encode("utf-8", "surrogatepass"))
    if cpython_compiles(text):
        # valid Python must never be reported as a syntax error (libcst and CPython must agree)
        assert "TA001" not in {f.code for f in result.findings}, [f.message for f in result.findings]


@fuzz_settings(5)
@given(hypothesmith.from_node())
def test_libcst_generated_programs_never_crash_the_linter(source):
    # from_node() builds libcst trees: valid, and full of nodes the grammar strategy rarely makes
    check_lint(("import torch\n" + source).encode("utf-8", "surrogatepass"))


# -- mutated fixtures -----------------------------------------------------------------------------

WRAPPERS = [
    "def _wrapper():\n",
    "async def _wrapper():\n",
    "class _Wrapper:\n",
    "if __name__ == '__main__':\n",
    "for _ in range(3):\n",
    "while True:\n",
    "with torch.no_grad():\n",
    "try:\n",
    "def outer():\n    def _inner():\n",
    "class Net(torch.nn.Module):\n    def forward(self, x):\n",
]


def _indent(lines: list[bytes], prefix: bytes) -> list[bytes]:
    return [prefix + ln if ln.strip() else ln for ln in lines]


@st.composite
def mutated_fixture(draw):
    """A fixture file after 1-4 random mutations; always mentions torch."""
    data = draw(st.sampled_from(FIXTURE_BYTES))
    lines = data.splitlines(keepends=True) or [b"\n"]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(
            ["delete", "duplicate", "swap", "indent", "dedent", "wrap", "bytes", "overwrite",
             "truncate", "splice", "crlf"]
        ))
        n = len(lines)
        i = draw(st.integers(0, max(n - 1, 0)))
        j = draw(st.integers(0, max(n - 1, 0)))
        if op == "delete" and n > 1:
            k = draw(st.integers(1, 5))
            del lines[i : i + k]
        elif op == "duplicate":
            k = draw(st.integers(1, 5))
            lines[i:i] = lines[i : i + k]
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i : j + 1] = _indent(lines[i : j + 1], b"    ")
        elif op == "dedent":
            lines[i : j + 1] = [ln[4:] if ln.startswith(b"    ") else ln.lstrip(b" ") for ln in lines[i : j + 1]]
        elif op == "wrap":
            header = draw(st.sampled_from(WRAPPERS)).encode()
            depth = header.count(b"\n")
            body = _indent(lines, b"    " * depth)
            tail = b"\nexcept Exception:\n    pass\n" if header.startswith(b"try") else b""
            lines = [*header.splitlines(keepends=True), *body, tail]
        elif op == "bytes":
            blob = b"".join(lines)
            at = draw(st.integers(0, len(blob)))
            junk = draw(st.binary(min_size=1, max_size=8))
            lines = (blob[:at] + junk + blob[at:]).splitlines(keepends=True)
        elif op == "overwrite":
            blob = bytearray(b"".join(lines))
            if blob:
                at = draw(st.integers(0, len(blob) - 1))
                blob[at] = draw(st.sampled_from(b"()[]{}:;,.=\\'\"#@ \t\n0aZ\xff\x80"))
            lines = bytes(blob).splitlines(keepends=True)
        elif op == "truncate":
            blob = b"".join(lines)
            lines = blob[: draw(st.integers(0, len(blob)))].splitlines(keepends=True)
        elif op == "splice":
            other = draw(st.sampled_from(FIXTURE_BYTES)).splitlines(keepends=True)
            if other:
                a = draw(st.integers(0, len(other) - 1))
                lines[i:i] = other[a : a + draw(st.integers(1, 8))]
        elif op == "crlf":
            lines = [ln.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for ln in lines]
        if not lines:
            lines = [b"\n"]
    out = b"".join(lines)
    if b"torch" not in out:
        out = b"import torch\n" + out
    return out


@fuzz_settings(150)
@given(mutated_fixture())
def test_mutated_fixtures_never_crash_the_linter(data):
    check_lint(data)


@fuzz_settings(60)
@given(mutated_fixture())
def test_mutated_fixtures_lint_deterministically(data):
    """Linting is a pure function of the bytes: a second run (what the cache relies on) agrees."""
    first = check_lint(data)
    second = lint_source("fuzzed.py", data, SETTINGS)
    assert [f.to_dict() for f in first.findings] == [f.to_dict() for f in second.findings]


@fuzz_settings(15)
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_never_crash_the_linter(junk):
    check_lint(b"import torch\n" + junk)
    check_lint(junk + b"\nimport torch\n")


# -- the fixer on mutated fixtures ----------------------------------------------------------------


@fuzz_settings(40)
@given(mutated_fixture())
def test_fixer_on_mutated_fixtures_keeps_code_valid(data):
    from torch_audit.lint.autofix import fix_bytes, syntax_problem

    out = fix_bytes("fuzzed.py", data, SETTINGS, unsafe=True)  # must not raise
    assert out.internal_errors == 0, [f.message for f in out.findings if f.code == "TA003"] + out.tracebacks
    if out.changed:
        from torch_audit.lint.engine import decode

        before, _ = decode(data)
        after, _ = decode(out.fixed)
        assert cst.parse_module(after) is not None  # a fix never breaks the parse
        if syntax_problem(before, "fuzzed.py") is None:
            assert syntax_problem(after, "fuzzed.py") is None


# -- the CLI end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-cli")


@fuzz_settings(12)
@given(data=mutated_fixture(), fmt=st.sampled_from(["text", "json", "sarif", "github"]))
def test_cli_exit_code_on_mutated_files(cli_dir, data, fmt):
    from torch_audit.cli import cli

    target = cli_dir / "fuzzed.py"
    target.write_bytes(data)
    result = CliRunner().invoke(
        cli,
        ["lint", str(target), "--no-cache", "--jobs", "1", "--select", "ALL", "--preview", "--output-format", fmt],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    # one readable file and no internal error: 0 (clean) or 1 (findings), never 2
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if fmt == "json":
        import json

        json.loads(result.stdout)
