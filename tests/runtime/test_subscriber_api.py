"""The session's public subscriber API (docs/runtime.md, "The subscriber API"): the documented
example runs as written, and the contract it promises holds (hooks only for the events asked,
failures disable the subscriber and never break training, the ``finding`` event, reads deferred
to the step's one read, no private reach from ``torch-audit run`` or the integrations)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime.subscribers import EVENTS, Subscriber, validate_events

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "runtime.md"


def _documented_example() -> str:
    text = DOC.read_text(encoding="utf-8")
    marker = "<!-- tested: tests/runtime/test_subscriber_api.py -->"
    assert marker in text, "the example in docs/runtime.md lost its marker"
    after = text.split(marker, 1)[1]
    m = re.search(r"```python\n(.*?)```", after, re.S)
    assert m
    return m.group(1)


def test_the_documented_example_runs(capsys):
    exec(compile(_documented_example(), str(DOC), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "X001 SGD steps with lr=0" in out and "= help: Check the learning-rate schedule" in out


def _train(steps: int = 3, model: nn.Module | None = None) -> None:
    model = model or nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
        opt.step()


class Recorder(Subscriber):
    events = frozenset({"root_forward", "backward", "step_pre", "step_post", "finish"})

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_root_forward(self, module):
        self.seen.append("forward")

    def on_backward(self, event):
        self.seen.append("backward")

    def on_step_pre(self, ctx):
        self.seen.append(f"step_pre {ctx.label} {ctx.step}")

    def on_step_post(self, ctx):
        self.seen.append("step_post")

    def on_finish(self):
        self.seen.append("finish")


def test_a_subscriber_sees_the_training_loop_in_order():
    rec = Recorder()
    session = torch_audit.audit(select=[], config=False)  # no check at all: the hooks are the subscriber's
    session.subscribe(rec)
    with session:
        _train(2)
    assert rec.seen == ["forward", "backward", "step_pre SGD 0", "step_post",
                        "forward", "backward", "step_pre SGD 1", "step_post", "finish"]
    assert session.findings == []


def test_subscribing_inside_the_block_installs_the_hooks_then():
    rec = Recorder()
    with torch_audit.audit(select=[], config=False) as session:
        _train(1)
        session.subscribe(rec)
        _train(1)
        session.unsubscribe(rec)
        _train(1)
    assert rec.seen.count("step_post") == 1


def test_a_failing_subscriber_is_disabled_with_a_note_and_training_goes_on():
    class Broken(Subscriber):
        events = frozenset({"step_pre"})
        calls = 0

        def on_step_pre(self, ctx):
            Broken.calls += 1
            raise ValueError("kaputt")

    model = nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    session = torch_audit.audit(config=False)
    session.subscribe(Broken())
    with session:
        _train(3, model)
    assert Broken.calls == 1
    assert any("subscriber Broken raised ValueError: kaputt" in n for n in session.notes)
    assert not [f for f in session.findings if f.code == "TA799"]  # not a check: no finding
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    assert "Note: subscriber Broken raised" in session.report()


def test_unknown_events_are_refused_at_subscription():
    class Typo(Subscriber):
        events = frozenset({"step"})

        def on_step(self, ctx):
            pass

    assert validate_events(Typo) == ["Typo: unknown events ['step']"]
    with pytest.raises(ValueError, match="unknown events"):
        torch_audit.audit(config=False).subscribe(Typo())


def test_any_object_with_events_and_methods_is_a_subscriber():
    class Plain:  # no base class, no `enabled`
        events = frozenset({"step_post"})

        def __init__(self):
            self.steps = 0

        def on_step_post(self, ctx):
            self.steps += 1

    plain = Plain()
    session = torch_audit.audit(config=False)
    session.subscribe(plain)
    with session:
        _train(2)
    assert plain.steps == 2 and plain.enabled

    class NoHandler:
        events = frozenset({"backward"})

    with pytest.raises(ValueError, match="without on_backward"):
        torch_audit.audit(config=False).subscribe(NoHandler())
    with pytest.raises(TypeError, match="no `events`"):
        torch_audit.audit(config=False).subscribe(object())


def test_the_finding_event_gives_each_new_finding_once():
    class Findings(Subscriber):
        events = frozenset({"finding"})

        def __init__(self):
            self.got = []

        def on_finding(self, finding):
            self.got.append(finding.code)

    sub = Findings()
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    session = torch_audit.audit(config=False, select=["gradients-not-cleared"])
    session.subscribe(sub)
    with session:
        for _ in range(4):  # never cleared: reported once, counted up afterwards
            F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
            opt.step()
    assert sub.got == ["TA804"] and session.findings[0].count >= 2


def test_deferred_reads_of_a_subscriber_ride_the_step_read():
    """A subscriber's defer() adds no host read: the values arrive with the checks' one read
    per step (counted as tolist() calls of the session's reads)."""
    from torch_audit.runtime import deferred_reads

    class Norms(Subscriber):
        events = frozenset({"step_pre"})

        def __init__(self, session):
            self.session, self.values = session, []

        def on_step_pre(self, ctx):
            self.session.defer(ctx.grad_norms(), self.values.append, owner=self)

    reads = []
    original = deferred_reads.DeferredReads._deliver

    def counting(self, values, items):
        reads.append(len(items))
        return original(self, values, items)

    deferred_reads.DeferredReads._deliver = counting
    try:
        session = torch_audit.audit(config=False)
        sub = session.subscribe(Norms(session))
        with session:
            _train(3)
    finally:
        deferred_reads.DeferredReads._deliver = original
    assert len(sub.values) == 3 and all(len(v) == 2 for v in sub.values)  # weight and bias norms
    steps_read = [n for n in reads if n]
    assert len(steps_read) <= 3 + 1  # one read per step (and at most the final one)


def test_run_and_the_integrations_use_only_the_public_api():
    """No second hook system and no private reach into the session: the run's monitor and the
    integrations register no torch hook and touch no underscore attribute of a session."""
    files = [ROOT / "auditor" / "runtime" / name for name in
             ("run_monitor.py", "audited_run.py", "run_command.py", "run_report.py", "profile_command.py")]
    files += sorted((ROOT / "auditor" / "integrations").glob("*.py"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "register_optimizer_step" not in text and "register_module_forward" not in text, path
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                if isinstance(base, ast.Attribute) and base.attr == "session" or \
                        isinstance(base, ast.Name) and base.id == "session":
                    pytest.fail(f"{path.name}:{node.lineno}: session.{node.attr} is private")


def test_every_event_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for event in EVENTS:
        assert f"`on_{event}(" in text, event


class _ForwardLog(Subscriber):
    events = frozenset({"forward"})

    def __init__(self, types=None, grad=None) -> None:
        self.forward_types = types
        self.forward_grad = grad
        self.seen: list[tuple[str, bool]] = []

    def on_forward(self, module, args, output) -> None:
        self.seen.append((type(module).__name__, torch.is_grad_enabled()))


def test_forward_types_and_forward_grad_choose_the_calls_a_subscriber_gets():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.1), nn.Linear(4, 2))
    every, linear, no_grad_only, dropout_with_grad = (
        _ForwardLog(), _ForwardLog(types=(nn.Linear,)), _ForwardLog(grad=False),
        _ForwardLog(types=[nn.Dropout], grad=True))
    x = torch.randn(3, 4)
    with torch_audit.audit(config=False, select=["runtime-internal-error"]) as session:
        for sub in (every, linear, no_grad_only, dropout_with_grad):
            session.subscribe(sub)
        model(x)
        with torch.no_grad():
            model(x)
    names = ["Linear", "ReLU", "Dropout", "Linear", "Sequential"]
    assert every.seen == [(n, True) for n in names] + [(n, False) for n in names]
    assert linear.seen == [("Linear", True)] * 2 + [("Linear", False)] * 2
    assert no_grad_only.seen == [(n, False) for n in names]
    assert dropout_with_grad.seen == [("Dropout", True)]


def test_a_subscriber_added_later_is_called_for_classes_seen_before():
    model = nn.Linear(2, 2)
    late = _ForwardLog(types=(nn.Linear,))
    with torch_audit.audit(config=False, select=["runtime-internal-error"]) as session:
        session.subscribe(_ForwardLog())
        model(torch.randn(1, 2))
        session.subscribe(late)
        model(torch.randn(1, 2))
    assert late.seen == [("Linear", True)]
