"""One daemon thread that calls a function after a delay, re-armed as often as needed.

Pass sampling ends an unaudited stretch by time: while it lasts no torch hook is installed,
so nothing in the training thread can notice that it is over. ``threading.Timer`` would start
a thread per stretch (a hundred a second on short passes); this thread is started once, on
first use, and sleeps on a condition between alarms.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Callable

__all__ = ["Alarm"]

#: every alarm of this process: a forked child re-creates their locks (one at-fork callback)
_ALARMS: "weakref.WeakSet[Alarm]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for alarm in list(_ALARMS):
        alarm._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Alarm:
    """``set(delay, fn)`` calls ``fn()`` on the alarm's thread ``delay`` seconds later, unless
    ``cancel()`` or another ``set()`` comes first. ``fn`` must be quick and must not raise."""

    def __init__(self, name: str = "torch-audit-alarm") -> None:
        self._name = name
        self._lock = threading.Condition()
        self._due: float | None = None
        self._fn: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        _ALARMS.add(self)

    def _forked(self) -> None:
        """In a forked child: no alarm thread was copied, and its lock may have been held."""
        self._lock = threading.Condition()
        self._thread = None
        self._due = self._fn = None

    def set(self, delay: float, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                return
            self._due = time.monotonic() + max(0.0, delay)
            self._fn = fn
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._lock.notify()

    def cancel(self) -> None:
        with self._lock:
            self._due = self._fn = None

    def close(self) -> None:
        """Cancel and let the thread end (it is not waited for: it holds nothing)."""
        with self._lock:
            self._closed = True
            self._due = self._fn = None
            self._lock.notify()

    @property
    def pending(self) -> bool:
        return self._fn is not None

    def _run(self) -> None:
        lock = self._lock
        while True:
            with lock:
                while True:
                    if self._closed:
                        return
                    if self._due is None:
                        lock.wait()
                        continue
                    wait = self._due - time.monotonic()
                    if wait > 0:
                        lock.wait(wait)
                        continue
                    fn, self._due, self._fn = self._fn, None, None
                    break
            # outside the lock: fn takes the caller's own lock, and the caller may cancel
            # while holding it
            if fn is not None:
                try:
                    fn()
                except Exception:  # pragma: no cover - fn is the session's, and guarded
                    pass
