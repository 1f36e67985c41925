"""The pass sampler's alarm thread (``torch_audit.runtime.alarm``)."""

from __future__ import annotations

import threading
import time

from torch_audit.runtime.alarm import Alarm


def test_it_calls_once_after_the_delay_on_its_own_thread():
    alarm, fired = Alarm(), threading.Event()
    calls = []

    def fn() -> None:
        calls.append((time.monotonic(), threading.current_thread().name))
        fired.set()

    start = time.monotonic()
    alarm.set(0.05, fn)
    assert alarm.pending
    assert fired.wait(5)
    when, thread = calls[0]
    assert when - start >= 0.05 and thread == "torch-audit-alarm"
    time.sleep(0.1)
    assert len(calls) == 1 and not alarm.pending
    alarm.close()


def test_cancel_and_a_new_set_replace_the_pending_call():
    alarm, calls = Alarm(), []
    alarm.set(0.05, lambda: calls.append("cancelled"))
    alarm.cancel()
    alarm.set(0.05, lambda: calls.append("replaced"))
    alarm.set(0.05, lambda: calls.append("last"))
    time.sleep(0.3)
    assert calls == ["last"]
    alarm.close()


def test_one_thread_serves_every_alarm_and_ends_on_close():
    alarm, calls = Alarm(), []
    for i in range(3):
        done = threading.Event()
        alarm.set(0.01, lambda i=i, done=done: (calls.append(i), done.set()))
        assert done.wait(5)
    assert calls == [0, 1, 2]
    thread = alarm._thread
    assert sum(t.name == "torch-audit-alarm" and t is thread for t in threading.enumerate()) == 1
    alarm.close()
    thread.join(5)
    assert not thread.is_alive()
    alarm.set(0.01, lambda: calls.append("after close"))
    time.sleep(0.1)
    assert calls == [0, 1, 2]


def test_the_call_may_take_the_lock_the_caller_holds_while_cancelling():
    # the session cancels while holding its light-hook lock, which the call takes too
    alarm, lock, done = Alarm(), threading.Lock(), threading.Event()

    def fn() -> None:
        with lock:
            done.set()

    for _ in range(50):
        alarm.set(0.0, fn)
        with lock:
            alarm.cancel()
    alarm.set(0.0, fn)
    assert done.wait(5)
    alarm.close()
