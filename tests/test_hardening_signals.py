"""``torch-audit lint --jobs N`` and signals (issue 18, item 10).

SIGTERM (what CI runners, ``timeout`` and container stops send) is handled like Ctrl-C: the run
is cancelled, the worker processes are reaped, and the exit code is 143 (128 + 15). A worker
never outlives its parent, even one killed with SIGKILL, which cannot be handled: it would stay
blocked forever on a pipe nobody reads.

Linux only (the tests find the workers through /proc); CI runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; CI runs on Linux")

ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}

_FUNCTION = """
def train_{i}(model, loader, optimizer):
    model.train()
    for x, y in loader:
        out = model.forward(x)
        loss = F.cross_entropy(F.softmax(out, dim=1), y)
        loss.backward()
        optimizer.step()
"""


def _slow_tree(folder: Path, files: int = 60, functions: int = 150) -> None:
    """Enough work that two workers are busy for many seconds."""
    for n in range(files):
        body = "".join(_FUNCTION.format(i=i) for i in range(functions))
        (folder / f"m{n:03d}.py").write_text("import torch\nimport torch.nn.functional as F\n" + body)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _start_with_workers(folder: Path) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch_audit", "lint", ".", "--jobs", "2", "--no-cache"],
        cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = _children(proc.pid)
        if len(workers) >= 2:
            time.sleep(0.5)  # let them start on their tasks
            return proc, _children(proc.pid)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    pytest.fail("the run never started two workers")


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _kill_all(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def test_sigterm_cancels_the_run_reaps_the_workers_and_exits_143(tmp_path):
    _slow_tree(tmp_path)
    proc, workers = _start_with_workers(tmp_path)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
        assert proc.returncode == 143, err
        assert "Traceback" not in err, err
        assert err.strip().splitlines() == ["torch-audit: terminated"], err
        assert elapsed < 20  # cancelled, not finished
        assert _wait_gone(workers, 10) == []
    finally:
        proc.kill()
        _kill_all(workers)


def test_workers_die_with_a_parent_killed_without_warning(tmp_path):
    _slow_tree(tmp_path)
    proc, workers = _start_with_workers(tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert _wait_gone(workers, 10) == [], "workers outlived their parent"
    finally:
        _kill_all(workers)


def test_sigint_still_exits_130(tmp_path):
    """Control: Ctrl-C keeps its own exit code and message."""
    _slow_tree(tmp_path)
    proc, workers = _start_with_workers(tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
        assert _wait_gone(workers, 30) == []
    finally:
        proc.kill()
        _kill_all(workers)
