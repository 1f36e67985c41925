"""`--fix`, `--diff`, `--unsafe-fixes`: the fix machinery (torch_audit.lint.autofix).

Machinery tests use small rules defined here, so they do not depend on which catalogue rules
are fixable; end-to-end tests use bias-before-norm (TA201, an unsafe fix)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from torch_audit.findings import Applicability, Edit, Fix, Severity
from torch_audit.lint import autofix as fixer
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.autofix import FileChanged, ReadOnly, fix_bytes, write_if_unchanged
from torch_audit.rule import StaticRule

ROOT = Path(__file__).resolve().parent.parent


# -- rules for the machinery tests -----------------------------------------------------------
def _rule(code: str, name: str, on_name=None, on_call=None, applicability=Applicability.SAFE):
    class _R(StaticRule):
        """## What it does
        test rule.

        ## Why is this bad?
        test.

        ## Fix safety
        test.

        ## References
        - none
        """

        severity = Severity.WARNING
        message = "{what}"
        fixable = "always"

        def visit_Name(self, node):
            if on_name is not None:
                new = on_name(node.value)
                if new is not None:
                    self.report(node, what=node.value, fix=self.replace(node, new, "rename", applicability))

        def visit_Call(self, node):
            if on_call is not None:
                new = on_call(self.ctx, node)
                if new is not None:
                    self.report(node, what="call", fix=self.replace(node, new, "call", applicability))

    _R.code, _R.name = code, name
    _R.__name__ = name.replace("-", "_")
    return _R


def _settings(*rules) -> LintSettings:
    return LintSettings(rules=list(rules))


TORCH = "import torch\n"


def test_simple_safe_fix_and_unsafe_gate():
    rename = _rule("TA990", "rename-a", on_name=lambda v: "b" if v == "a" else None, applicability=Applicability.UNSAFE)
    src = (TORCH + "a = 1\nprint(a)\n").encode()
    safe = fix_bytes("x.py", src, _settings(rename))
    assert safe.fixed is None and safe.applied == 0
    unsafe = fix_bytes("x.py", src, _settings(rename), unsafe=True)
    assert unsafe.fixed == (TORCH + "b = 1\nprint(b)\n").encode()
    assert unsafe.applied == 2 and unsafe.findings == []


def test_conflicting_fixes_are_deferred_to_the_next_pass():
    rename = _rule("TA990", "rename-a", on_name=lambda v: "a2" if v == "a1" else None)

    def wrap(ctx, call):
        if isinstance(call.func, cst.Name) and call.func.value == "f":
            return "g(" + ", ".join(ctx.code(a.value) for a in call.args) + ")"
        return None

    wrapper = _rule("TA991", "f-to-g", on_call=wrap)
    src = (TORCH + "y = f(a1)\n").encode()
    out = fix_bytes("x.py", src, _settings(rename, wrapper))
    assert out.fixed == (TORCH + "y = g(a2)\n").encode()
    assert out.passes == 2  # the call fix overlapped the rename and waited one pass
    assert out.applied == 2 and out.findings == []


def test_fix_producing_invalid_code_is_dropped_and_reported():
    broken = _rule("TA990", "breaks", on_name=lambda v: "a +" if v == "a" else None)
    fine = _rule("TA991", "fine", on_name=lambda v: "d" if v == "c" else None)
    src = (TORCH + "a = 1\nc = 2\n").encode()
    out = fix_bytes("x.py", src, _settings(broken, fine))
    assert out.fixed == (TORCH + "a = 1\nd = 2\n").encode()  # the good fix still applies
    assert out.internal_errors >= 1
    errors = [f for f in out.findings if f.name == "internal-error"]
    assert errors and "invalid code" in errors[0].message and "TA990" in errors[0].message


def test_fixes_that_never_converge_are_bounded():
    flip = _rule("TA990", "flip", on_name=lambda v: {"a": "b", "b": "a"}.get(v))
    src = (TORCH + "a = 1\n").encode()
    out = fix_bytes("x.py", src, _settings(flip), max_passes=5)
    assert out.passes == 5
    assert any("did not converge" in n for n in out.notes)


def test_no_op_fix_stops():
    same = _rule("TA990", "same", on_name=lambda v: v if v == "a" else None)
    out = fix_bytes("x.py", (TORCH + "a = 1\n").encode(), _settings(same))
    assert out.fixed is None and out.passes == 1


def test_bad_edit_positions_are_reported_not_applied():
    class Bad(StaticRule):
        """## What it does
        x.

        ## Why is this bad?
        x.

        ## Fix safety
        x.

        ## References
        - x
        """

        code, name, message, fixable = "TA990", "bad-positions", "bad", "always"

        def visit_Module(self, node):
            self.report(node, fix=Fix("x", Applicability.SAFE, (Edit(99, 1, 99, 2, "z"),)))

    out = fix_bytes("x.py", (TORCH + "a = 1\n").encode(), _settings(Bad))
    assert out.fixed is None
    assert any(f.name == "internal-error" and "bad edit" in f.message for f in out.findings)


def test_crlf_bom_and_inserted_newlines():
    # an inserted multi-line text takes the file's newline
    two_lines = _rule("TA990", "two-lines", on_name=lambda v: "(b\n)" if v == "a" else None)
    src = b"\xef\xbb\xbfimport torch\r\n# comment\r\nx = a\r\n"
    out = fix_bytes("x.py", src, _settings(two_lines))
    assert out.fixed == b"\xef\xbb\xbfimport torch\r\n# comment\r\nx = (b\r\n)\r\n"


def test_encoding_cookie_is_kept():
    rename = _rule("TA990", "rename-a", on_name=lambda v: "b" if v == "a" else None)
    src = "# -*- coding: latin-1 -*-\nimport torch\ns = 'café'\na = s\n".encode("latin-1")
    out = fix_bytes("x.py", src, _settings(rename))
    assert out.fixed == "# -*- coding: latin-1 -*-\nimport torch\ns = 'café'\nb = s\n".encode("latin-1")


def test_unencodable_fix_is_dropped():
    euro = _rule("TA990", "euro", on_name=lambda v: "'€'" if v == "a" else None)
    src = "# -*- coding: latin-1 -*-\nimport torch\nx = a\n".encode("latin-1")
    out = fix_bytes("x.py", src, _settings(euro))
    assert out.fixed is None
    assert any("cannot be encoded" in f.message for f in out.findings)


# -- writing ---------------------------------------------------------------------------------
def test_write_if_unchanged_keeps_permissions_and_symlinks(tmp_path):
    target = tmp_path / "real.py"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o640)
    link = tmp_path / "link.py"
    link.symlink_to(target)
    write_if_unchanged(link, b"old\n", b"new\n")
    assert link.is_symlink() and target.read_bytes() == b"new\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "real.py"]  # no temp file left


def test_write_if_unchanged_refuses_a_file_changed_meanwhile(tmp_path):
    target = tmp_path / "a.py"
    target.write_bytes(b"someone else's edit\n")
    with pytest.raises(FileChanged):
        write_if_unchanged(target, b"what we read\n", b"fixed\n")
    assert target.read_bytes() == b"someone else's edit\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.py"]


def test_write_if_unchanged_refuses_read_only(tmp_path):
    target = tmp_path / "a.py"
    target.write_bytes(b"x\n")
    os.chmod(target, 0o444)
    with pytest.raises(ReadOnly):
        write_if_unchanged(target, b"x\n", b"y\n")
    assert target.read_bytes() == b"x\n"


def test_file_changed_between_read_and_write_is_skipped(tmp_path, monkeypatch):
    """The real flow: the file is edited by someone else after the fixer read it."""
    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC)
    real_fix_path = fixer.fix_path

    def fix_then_edit(p, settings, **kw):
        out = real_fix_path(p, settings, **kw)
        Path(p).write_text(BIAS_SRC + "# edited meanwhile\n")
        return out

    monkeypatch.setattr(fixer, "fix_path", fix_then_edit)
    from torch_audit.lint.command import run_lint
    from torch_audit.lint.options import LintOptions

    code = run_lint(LintOptions(paths=(str(path),), fix=True, unsafe_fixes=True, no_cache=True, jobs=1, quiet=True))
    assert code == 1
    assert path.read_text() == BIAS_SRC + "# edited meanwhile\n"


# -- end to end ------------------------------------------------------------------------------
BIAS_SRC = textwrap.dedent(
    """\
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)  # stem
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x))
    """
)
BIAS_FIXED = BIAS_SRC.replace("nn.Conv2d(3, 8, 3)", "nn.Conv2d(3, 8, 3, bias=False)")


def test_cli_fix_applies_unsafe_only_when_asked(tmp_path, run_cli):
    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC)
    os.chmod(path, 0o600)
    r = run_cli("lint", "--no-cache", "--fix", "model.py")
    assert r.returncode == 1, r.stderr
    assert path.read_text() == BIAS_SRC
    assert "TA201" in r.stdout and "hidden fix" in r.stdout
    assert "Fixed 0 findings (1 remaining)" in r.stderr

    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "model.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert path.read_text() == BIAS_FIXED
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "Fixed 1 finding (0 remaining)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".torch_audit")) == ["model.py"]

    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "model.py")
    assert r.returncode == 0 and path.read_text() == BIAS_FIXED


def test_cli_diff_writes_nothing(tmp_path, run_cli):
    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC)
    r = run_cli("lint", "--no-cache", "--diff", "--unsafe-fixes", "model.py")
    assert r.returncode == 1, r.stderr
    assert path.read_text() == BIAS_SRC
    assert "-        self.conv = nn.Conv2d(3, 8, 3)  # stem" in r.stdout
    assert "+        self.conv = nn.Conv2d(3, 8, 3, bias=False)  # stem" in r.stdout
    assert r.stdout.startswith("--- model.py\n+++ model.py\n")
    r = run_cli("lint", "--no-cache", "--diff", "model.py")  # the only fix is unsafe
    assert r.returncode == 0 and r.stdout == ""


def test_cli_fix_keeps_crlf(tmp_path, run_cli):
    path = tmp_path / "model.py"
    path.write_bytes(BIAS_SRC.replace("\n", "\r\n").encode())
    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "model.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert path.read_bytes() == BIAS_FIXED.replace("\n", "\r\n").encode()


def test_cli_fix_json_lists_remaining(tmp_path, run_cli):
    import json

    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC + "\ndef loss(model, x, y):\n    p = torch.softmax(model(x), 1)\n    return torch.nn.functional.cross_entropy(p, y), p\n")
    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "--output-format", "json", "model.py")
    assert r.returncode == 1, r.stderr
    remaining = json.loads(r.stdout)
    assert [f["code"] for f in remaining] == ["TA101"]  # p is also returned: no fix
    assert "bias=False" in path.read_text()


def test_cli_read_only_file_is_not_written(tmp_path, run_cli):
    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC)
    os.chmod(path, 0o444)
    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "model.py")
    assert r.returncode == 1
    assert "read-only" in r.stderr
    assert path.read_text() == BIAS_SRC
    assert "TA201" in r.stdout


def test_cli_per_file_ignores_apply_to_fixes(tmp_path, run_cli):
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nper-file-ignores = { "model.py" = ["TA201"] }\n')
    path = tmp_path / "model.py"
    path.write_text(BIAS_SRC)
    r = run_cli("lint", "--no-cache", "--fix", "--unsafe-fixes", "model.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert path.read_text() == BIAS_SRC


# -- interrupted runs ------------------------------------------------------------------------
def _project(tmp_path: Path, n: int = 4) -> dict[Path, str]:
    files = {}
    for i in range(n):
        p = tmp_path / f"m{i}.py"
        p.write_text(BIAS_SRC)
        files[p] = BIAS_SRC
    return files


def test_rename_failing_leaves_every_file_intact(tmp_path, monkeypatch, capsys):
    files = _project(tmp_path)

    def failing_replace(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fixer.os, "replace", failing_replace)
    from torch_audit.lint.command import run_lint
    from torch_audit.lint.options import LintOptions

    code = run_lint(LintOptions(paths=(str(tmp_path),), fix=True, unsafe_fixes=True, no_cache=True, jobs=1))
    assert code == 2
    assert "cannot write" in capsys.readouterr().err
    for p, text in files.items():
        assert p.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)  # no temp files


KILL_SCRIPT = """
import os, signal, sys
from torch_audit.lint import autofix as fixer
real_fsync = os.fsync
calls = 0
def fsync(fd):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after writing the temp file, before the rename
    return real_fsync(fd)
fixer.os.fsync = fsync
from torch_audit.lint.command import run_lint
from torch_audit.lint.options import LintOptions
run_lint(LintOptions(paths=(sys.argv[1],), fix=True, unsafe_fixes=True, no_cache=True, jobs=1))
"""


@pytest.mark.parametrize("kill_at", [1, 3, 4])
def test_process_killed_mid_write_leaves_files_old_or_new(tmp_path, kill_at):
    project = tmp_path / "project"
    project.mkdir()
    files = _project(project)
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(project), str(kill_at)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    states = []
    for p in files:
        text = p.read_text()
        assert text in (BIAS_SRC, BIAS_FIXED), f"{p.name} is half-written"
        states.append(text == BIAS_FIXED)
    assert not all(states)  # the kill happened before the end
    # the run can simply be repeated; leftover temporary files are hidden and not Python files
    r = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", "--no-cache", "--fix", "--unsafe-fixes", str(project)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(p.read_text() == BIAS_FIXED for p in files)
