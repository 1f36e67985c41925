"""The session's call window (``auditor/runtime/intercept.py``): how it observes the loss and
``backward()``, and for how long. From Python 3.12 it observes with local ``sys.monitoring``
events on the watched functions alone; before, and when no monitoring tool id is free, with a
torch function mode, which is on the stack only while the window is open: there every torch
call pays a Python call, so the window covers the loss and the ``backward()`` call and nothing
else: not the session's own work on a forward's outputs, and not what runs after ``backward()``
returns (a hand-written update, ``zero_grad()``, the next batch), also in scripts without an
optimizer, whose step hook would otherwise be the next place to close it. The behavioural tests
run under both mechanisms where the interpreter has both (the ``mechanism`` fixture)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime import AuditFailure, intercept
from torch_audit.runtime.session import active_session
from torch_audit.runtime.subscribers import Subscriber


def _stack() -> int:
    return torch._C._len_torch_function_stack()


def _window():
    return active_session()._hooks.window


@pytest.fixture(params=["monitoring", "mode"])
def mechanism(request, monkeypatch):
    """Runs a test with each way the window can observe calls on this interpreter."""
    if request.param == "monitoring" and not intercept._MONITORING:
        pytest.skip("sys.monitoring needs Python 3.12")
    if request.param == "mode":
        monkeypatch.setattr(intercept, "_MONITORING", False)
    return request.param


uses_monitoring = pytest.mark.skipif(not intercept._MONITORING, reason="sys.monitoring needs Python 3.12")


class _Backwards(Subscriber):
    """Counts the backward() calls the session saw start and end."""

    events = frozenset({"backward", "backward_end"})

    def __init__(self):
        self.started = self.ended = 0

    def on_backward(self, event):
        self.started += 1

    def on_backward_end(self, event):
        self.ended += 1


def _manual_sgd(model, steps, *, after_backward=None, nan_at=None):
    """A loop without a torch.optim optimizer: the update is written by hand."""
    for step in range(steps):
        model.zero_grad()
        loss = F.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 1))
        if step == nan_at:
            loss = loss * float("nan")
        loss.backward()
        if after_backward is not None:
            after_backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad


needs_cheap_profile = pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="from Python 3.12 the mode, used only when no monitoring tool id is free, stays until "
           "the next forward (a profile function there re-instruments the code that runs next)")


@needs_cheap_profile
def test_the_window_is_off_the_stack_when_backward_returns():
    seen = []
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        _manual_sgd(model, 4, after_backward=lambda: seen.append(_stack()), nan_at=3)
    assert seen == [0, 0, 0, 0]
    assert sys.getprofile() is None
    assert "TA701" in session.codes, session.report()  # the loss was still seen


def test_where_a_profile_function_is_costly_the_window_stays_until_the_next_forward(monkeypatch):
    # the mode as on Python 3.12 and later when no monitoring tool id is free
    monkeypatch.setattr(intercept, "_CHEAP_PROFILE", False)
    monkeypatch.setattr(intercept, "_MONITORING", False)
    seen = []
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        _manual_sgd(model, 3, after_backward=lambda: seen.append((_stack(), sys.getprofile())), nan_at=2)
    assert seen == [(1, None)] * 3
    assert _stack() == 0
    assert "TA701" in session.codes, session.report()


def test_a_profile_function_of_the_users_is_kept(mechanism):
    """With a profiler of the user's installed the session does not replace it: the window then
    stays until the next forward, as the audit still works."""
    events = []

    def profiler(frame, event, arg):
        events.append(event)

    model = nn.Linear(4, 1)
    sys.setprofile(profiler)
    try:
        with torch_audit.audit(config=False) as session:
            _manual_sgd(model, 3, nan_at=2)
            still_ours = sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
    assert still_ours and events
    assert _stack() == 0
    assert "TA701" in session.codes, session.report()


@needs_cheap_profile
def test_backward_closes_the_window_when_only_loss_checks_are_selected():
    seen = []
    model = nn.Linear(4, 3)
    with torch_audit.audit(config=False, select=["cross-entropy-single-class"]):
        for _ in range(2):
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
            seen.append(_stack())
    assert seen == [0, 0]


def test_the_sessions_work_on_a_forwards_outputs_runs_outside_the_window(mechanism):
    """Subscribers see the outermost module's output before the window opens: their own torch
    calls are not intercepted."""

    class Probe(Subscriber):
        events = frozenset({"forward", "root_forward_end"})

        def __init__(self):
            self.stacks = []

        def on_forward(self, module, args, output):
            self.stacks.append((_stack(), _window().is_open))

        def on_root_forward_end(self, module):
            self.stacks.append((_stack(), _window().is_open))

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch_audit.audit(config=False) as session:
        probe = session.subscribe(Probe())
        for _ in range(2):
            out = model(torch.randn(8, 4))
            assert _window().is_open  # for the loss and backward()
            assert _stack() == (1 if mechanism == "mode" else 0)
            F.cross_entropy(out, torch.randint(0, 3, (8,))).backward()
    assert len(probe.stacks) == 2 * 5 and set(probe.stacks) == {(0, False)}


def test_a_backward_that_raises_has_no_end_and_the_next_one_is_seen(mechanism):
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        probe = session.subscribe(_Backwards())
        out = model(torch.randn(8, 4))
        out.register_hook(lambda grad: 1 / 0)  # raises inside backward()
        with pytest.raises(ZeroDivisionError):
            F.mse_loss(out, torch.randn(8, 1)).backward()
        _manual_sgd(model, 2, nan_at=1)
    assert (probe.started, probe.ended) == (3, 2)
    assert "TA701" in session.codes, session.report()  # the NaN loss after the failed call
    assert (_stack(), sys.getprofile()) == (0, None)


def test_a_root_forward_inside_backward_keeps_the_backward_call(mechanism):
    """Reentrant checkpointing of the whole model re-runs its forward inside backward(): that
    forward closes the window, but the backward() call in progress still ends (and the next
    one is still seen)."""
    from torch.utils.checkpoint import checkpoint

    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    with torch_audit.audit(config=False) as session:
        probe = session.subscribe(_Backwards())
        for step in range(3):
            x = torch.randn(8, 4, requires_grad=True)
            loss = checkpoint(model, x, use_reentrant=True).square().mean()
            if step == 2:
                loss = loss * float("nan")
            loss.backward()
            model.zero_grad()
    assert (probe.started, probe.ended) == (3, 3)
    assert "TA701" in session.codes, session.report()
    assert (_stack(), sys.getprofile()) == (0, None)


def test_fail_fast_raises_out_of_backward_and_leaves_nothing_behind(mechanism):
    model = nn.Linear(4, 1)
    with pytest.raises(AuditFailure):
        with torch_audit.audit(config=False, fail_fast=True):
            _manual_sgd(model, 3, nan_at=1)
    assert (_stack(), sys.getprofile()) == (0, None)


def test_the_loss_is_seen_with_its_arguments_by_keyword(mechanism):
    model = nn.Linear(4, 3)
    with torch_audit.audit(config=False) as session:
        for _ in range(2):
            out = model(torch.randn(8, 4)).softmax(-1)
            F.nll_loss(input=out, target=torch.randint(0, 3, (8,)), reduction="mean").backward()
    assert "TA707" in session.codes, session.report()


@uses_monitoring
def test_monitoring_observes_with_no_mode_and_no_profile_function():
    model = nn.Linear(4, 3)
    with torch_audit.audit(config=False) as session:
        assert _window().mechanism == "monitoring"
        for step in range(3):
            out = model(torch.randn(8, 4))
            assert (_window().is_open, _stack(), sys.getprofile()) == (True, 0, None)
            loss = F.cross_entropy(out.softmax(-1), torch.randint(0, 3, (8,)))
            (loss * float("nan") if step == 2 else loss).backward()
            assert not _window().is_open
    assert {"TA701", "TA707"} <= set(session.codes), session.report()


@uses_monitoring
def test_monitoring_gives_its_tool_id_back_and_yields_to_other_tools():
    mon = sys.monitoring
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False):
        tool = _window()._monitor.tool
        assert mon.get_tool(tool) == "torch-audit"
        _manual_sgd(model, 2)
    assert mon.get_tool(tool) is None
    for tool in intercept._TOOL_IDS:  # both taken, by a coverage tool say
        mon.use_tool_id(tool, "someone else")
    try:
        with torch_audit.audit(config=False) as session:
            assert _window().mechanism == "mode"
            _manual_sgd(model, 3, nan_at=2)
        assert all(mon.get_tool(tool) == "someone else" for tool in intercept._TOOL_IDS)
    finally:
        for tool in intercept._TOOL_IDS:
            mon.free_tool_id(tool)
    assert "TA701" in session.codes, session.report()


@uses_monitoring
def test_monitoring_sees_backward_under_a_mode_of_the_users():
    """The mode cannot open over a user's mode (it would be popped by theirs); monitoring has
    no stack to share."""
    from torch.overrides import TorchFunctionMode

    class Passthrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        with Passthrough():
            _manual_sgd(model, 3, nan_at=2)
    assert "TA701" in session.codes, session.report()


def test_another_threads_backward_leaves_the_window_open(mechanism):
    """Monitoring events come from every thread: a backward() of another thread made while the
    window is open must neither close it nor be taken for the audited thread's."""
    import threading

    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        probe = session.subscribe(_Backwards())
        out = model(torch.randn(8, 4))
        worker = threading.Thread(target=lambda: nn.Linear(4, 1)(torch.randn(2, 4)).sum().backward())
        worker.start()
        worker.join()
        assert _window().is_open
        (F.mse_loss(out, torch.randn(8, 1)) * float("nan")).backward()
    assert (probe.started, probe.ended) == (1, 1)
    assert "TA701" in session.codes, session.report()


@uses_monitoring
def test_a_tool_id_freed_behind_the_sessions_back_does_not_break_its_end():
    mon = sys.monitoring
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False):
        tool = _window()._monitor.tool
        _manual_sgd(model, 1)
        mon.free_tool_id(tool)
        mon.use_tool_id(tool, "someone else")  # and taken by another tool
    try:
        assert mon.get_tool(tool) == "someone else"
    finally:
        mon.free_tool_id(tool)


def test_a_subscribers_own_loss_call_is_not_observed(mechanism):
    """A subscriber that calls a watched function itself (here ``F.cross_entropy`` from its
    ``on_cross_entropy``) is not handed that call as an event: no recursion, one event a call."""

    class Recomputes(Subscriber):
        events = frozenset({"cross_entropy", "backward_end"})

        def __init__(self):
            self.seen = 0

        def on_cross_entropy(self, event):
            self.seen += 1
            F.cross_entropy(event.input.detach(), event.target)

        def on_backward_end(self, event):
            F.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1])).item()

    model = nn.Linear(4, 3)
    with torch_audit.audit(config=False) as session:
        probe = session.subscribe(Recomputes())
        for _ in range(3):
            out = model(torch.randn(8, 4))
            F.cross_entropy(out, torch.randint(0, 3, (8,))).backward()
    assert probe.seen == 3 and probe.enabled
