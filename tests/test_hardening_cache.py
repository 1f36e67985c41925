"""The lint cache in an untrusted tree (issue 18, items 6 and 9).

A repository can ship anything inside ``.torch_audit_cache/``: symbolic links to the user's
files, a cache folder that is itself a link, a folder owned by someone else. The cache must
never write through a link, and must never answer for a file with a result computed for another
input (the same content at a test path and at a non-test path gives different findings).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_audit.lint.cache import CACHE_DIR_NAME, cache_key, content_hash

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}

posix_links = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links and O_NOFOLLOW")
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root (CI runs as root)"
)

BAD = b"import torch\n\n\ndef evaluate(model, x):\n    model.eval()\n    with torch.no_grad():\n        return model.forward(x)\n"


def lint(folder: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "torch_audit", "lint", ".", "--output-format", "json", *extra],
        cwd=folder, env=ENV, capture_output=True, text=True, timeout=timeout,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.py").write_bytes(BAD)
    return folder


def source_stamp() -> float:
    """Newest modification time of the tool's own code and data: results compared across runs
    are only comparable if nobody edited a rule meanwhile (a developer working in this tree)."""
    return max(p.stat().st_mtime for d in ("rules", "auditor") for p in (ROOT / d).rglob("*") if p.is_file())


def lint_entries(folder: Path) -> list[Path]:
    """The cached lint results (the cache also holds the whole-program model's entries: the
    summaries and outlines of modules, and the sets of files named)."""
    out = []
    for entry in (folder / CACHE_DIR_NAME).rglob("*.json"):
        data = json.loads(entry.read_bytes())
        if not {"summary", "outline", "named"} & data.keys():
            out.append(entry)
    return out


def findings(proc: subprocess.CompletedProcess) -> list:
    return json.loads(proc.stdout)


# -- item 6: symbolic links and foreign folders -------------------------------------------------


@posix_links
@pytest.mark.parametrize("name", ["README", ".gitignore"])
def test_cache_file_shipped_as_a_link_to_a_user_file_does_not_overwrite_it(tmp_path, name):
    folder = project(tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own file\n")
    (folder / CACHE_DIR_NAME).mkdir()
    (folder / CACHE_DIR_NAME / name).symlink_to(victim)
    proc = lint(folder, "--jobs", "1")
    assert proc.returncode == 1 and findings(proc)
    assert victim.read_text() == "the user's own file\n"


@posix_links
@pytest.mark.parametrize("name", ["README", ".gitignore"])
def test_cache_file_shipped_as_a_link_to_a_missing_file_does_not_create_it(tmp_path, name):
    folder = project(tmp_path)
    target = tmp_path / "created-by-torch-audit"
    (folder / CACHE_DIR_NAME).mkdir()
    (folder / CACHE_DIR_NAME / name).symlink_to(target)
    lint(folder, "--jobs", "1")
    assert not os.path.lexists(target)


@posix_links
def test_cache_folder_that_is_a_link_is_refused_with_one_warning(tmp_path):
    folder = project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / CACHE_DIR_NAME).symlink_to(elsewhere, target_is_directory=True)
    expected = findings(lint(folder, "--no-cache"))
    for _ in range(2):  # twice: a second run must not find anything to reuse either
        proc = lint(folder, "--jobs", "1")
        assert findings(proc) == expected
        warnings = [ln for ln in proc.stderr.splitlines() if "cache" in ln]
        assert len(warnings) == 1 and "symbolic link" in warnings[0], proc.stderr
        assert warnings[0].startswith("torch-audit: warning:")
    assert list(elsewhere.iterdir()) == []


@posix_links
@pytest.mark.parametrize("level", ["settings folder", "entry folder", "entry"])
def test_links_inside_the_cache_are_not_written_through(tmp_path, level):
    """A link planted where a settings folder, an entry folder or an entry lives (their names
    are predictable for a released version) is replaced or refused, never written through."""
    folder = project(tmp_path)
    assert lint(folder, "--jobs", "1").returncode == 1  # fills the cache
    (entry,) = lint_entries(folder)
    planted = {"settings folder": entry.parent.parent, "entry folder": entry.parent, "entry": entry}[level]
    outside = tmp_path / "outside"
    if level == "entry":
        outside.write_text("the user's own file\n")
        entry.unlink()
        entry.symlink_to(outside)
    else:
        outside.mkdir()
        shutil.rmtree(planted)
        planted.symlink_to(outside, target_is_directory=True)
    (folder / "model.py").write_bytes(BAD + b"# changed\n")  # a miss: the entry gets written
    proc = lint(folder, "--jobs", "1")
    assert proc.returncode == 1 and findings(proc)
    if level == "entry":
        assert outside.read_text() == "the user's own file\n"
    else:
        assert list(outside.rglob("*")) == []


@posix_links
def test_cache_entry_linked_to_an_endless_file_is_a_miss(tmp_path):
    folder = project(tmp_path)
    expected = findings(lint(folder, "--no-cache"))
    lint(folder, "--jobs", "1")
    (entry,) = lint_entries(folder)
    entry.unlink()
    entry.symlink_to("/dev/zero")
    proc = lint(folder, "--jobs", "1", timeout=60)
    assert findings(proc) == expected


@as_root
def test_cache_folder_owned_by_another_user_is_refused_with_one_warning(tmp_path):
    folder = project(tmp_path)
    cache = folder / CACHE_DIR_NAME
    cache.mkdir()
    os.chown(cache, 65534, 65534)
    expected = findings(lint(folder, "--no-cache"))
    proc = lint(folder, "--jobs", "1")
    assert findings(proc) == expected
    warnings = [ln for ln in proc.stderr.splitlines() if "cache" in ln]
    assert len(warnings) == 1 and "owned by" in warnings[0], proc.stderr
    assert list(cache.iterdir()) == []


def test_a_missing_cache_folder_is_created_with_its_readme_and_gitignore(tmp_path):
    """Control: the safe writes still write."""
    folder = project(tmp_path)
    first = lint(folder, "--jobs", "1")
    cache = folder / CACHE_DIR_NAME
    assert (cache / ".gitignore").read_text() == "*\n"
    assert "torch-audit" in (cache / "README").read_text()
    assert len(lint_entries(folder)) == 1
    assert "warning" not in first.stderr
    assert findings(lint(folder, "--jobs", "1")) == findings(first)


# -- item 9: the key covers every input a rule reads ----------------------------------------------


def test_cache_key_changes_with_each_input():
    base = cache_key(content_hash(b"x"), "train.py", "settings")
    assert cache_key(content_hash(b"x"), "train.py", "settings") == base
    assert cache_key(content_hash(b"y"), "train.py", "settings") != base
    assert cache_key(content_hash(b"x"), "tests/test_train.py", "settings") != base
    assert cache_key(content_hash(b"x"), "train.py", "other settings") != base
    assert cache_key(content_hash(b"x"), "train.py", "settings", ("summary-hash",)) != base
    # parts are delimited: moving a character from one input to the next is another key
    assert cache_key("ab", "c", "d") != cache_key("a", "bc", "d")


def test_same_content_at_a_test_path_and_a_non_test_path_keeps_its_own_findings(tmp_path):
    source = b"import torch\n\ntorch.autograd.set_detect_anomaly(True)\n"
    (tmp_path / "tests").mkdir()
    (tmp_path / "train.py").write_bytes(source)
    (tmp_path / "tests" / "test_train.py").write_bytes(source)
    expected = findings(lint(tmp_path, "--no-cache", "--jobs", "1"))
    assert {f["path"] for f in expected} == {"train.py"}  # detect-anomaly-enabled is fine in tests
    lint(tmp_path, "--jobs", "1")
    assert findings(lint(tmp_path, "--jobs", "1")) == expected


def test_cached_output_equals_no_cache_output_over_the_fixture_tree_at_test_and_non_test_paths(tmp_path):
    """Every static fixture, copied to a non-test path and to a test path (as ``test_*.py``
    under ``tests/``): the cold and the warm cache answer exactly as ``--no-cache``."""
    fixtures = sorted((ROOT / "fixtures" / "static").rglob("*.py"))
    assert len(fixtures) > 100
    for f in fixtures:
        rel = f.relative_to(ROOT / "fixtures" / "static")
        for target in (tmp_path / "src" / rel, tmp_path / "tests" / rel.parent / f"test_{rel.name}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nselect = ["ALL"]\npreview = true\n')
    stamp = source_stamp()
    expected = lint(tmp_path, "--no-cache", "--jobs", "2")
    assert expected.returncode == 1
    by_path = {f["path"] for f in findings(expected)}
    assert any(p.startswith("tests/") for p in by_path) and any(p.startswith("src/") for p in by_path)
    for run in ("cold", "warm"):
        proc = lint(tmp_path, "--jobs", "2")
        if source_stamp() != stamp:
            pytest.skip("torch-audit's own source changed while the test ran; results not comparable")
        assert proc.returncode == expected.returncode, run
        assert findings(proc) == findings(expected), run
        assert proc.stderr == expected.stderr, run  # the same notes, naming the right files
