"""The linter's worker processes: the pool (forked where possible), workers that ignore Ctrl-C and
die with their parent, SIGTERM raised as :class:`Terminated` in the parent, and tasks of about
equal size. Used by the runner, the fixer and the project model; imports nothing of the package.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

#: A worker task is one file, or a run of small files adding up to about this many bytes (at
#: most ``_TASK_MAX_FILES``): few enough tasks that the per-task round trip is noise, small enough
#: that the last tasks are short and no worker waits long for the other at the end.
_TASK_BYTES = 32 * 1024
_TASK_MAX_FILES = 16

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the parent where Ctrl-C raises KeyboardInterrupt, so that it gets the
    same clean-up (cancel, reap the workers); the command exits with :attr:`exit_code`."""

    exit_code = 128 + 15
    message = "terminated"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


class _SigtermRaises:
    """While linting, SIGTERM raises :class:`Terminated` in the main thread (elsewhere, e.g. a
    language server linting in a thread, the signal keeps its handler)."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self.previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self.previous)


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive its parent: one killed with SIGKILL leaves its workers blocked
    forever on a pipe write nobody reads. On Linux the kernel sends SIGTERM when the parent
    dies (PR_SET_PDEATHSIG); elsewhere a thread watches the parent's pid."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # forked with the parent's handler
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc symbol
            _watch_parent(parent)
    else:  # pragma: no cover - not Linux
        _watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)


def _watch_parent(parent: int) -> None:  # pragma: no cover - not Linux
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="torch-audit-parent-watch", daemon=True).start()


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_pool(jobs: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of ``jobs`` forked workers for the linter: every worker ignores
    Ctrl-C (the parent handles it and shuts the pool down) and dies with its parent, even one
    killed with SIGKILL (:func:`_die_with_parent`); then runs ``initializer(*initargs)``. Every
    pool of the linter is made here."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=_context(),
        initializer=_init_pool_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def _init_pool_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def _tasks(sizes: list[int]) -> list[list[int]]:
    """Group positions of ``sizes`` (largest first) into tasks of about ``_TASK_BYTES``."""
    tasks: list[list[int]] = []
    current: list[int] = []
    total = 0
    for position, size in enumerate(sizes):
        current.append(position)
        total += size
        if total >= _TASK_BYTES or len(current) >= _TASK_MAX_FILES:
            tasks.append(current)
            current, total = [], 0
    if current:
        tasks.append(current)
    return tasks


def _context():
    # multiprocessing and concurrent.futures are imported only when a pool is started: they cost
    # ~15 ms of start-up that linting a few files does not need.
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    # fork is by far the cheapest start on Linux; the parent holds no threads at this point.
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")
