"""The session's public subscriber API: the events a subscriber may ask for and its base class.

A subscriber is any object with an ``events`` set and an ``on_<event>`` method per event; it is
handed to :meth:`AuditSession.subscribe <torch_audit.runtime.session.AuditSession.subscribe>`.
The runtime checks are subscribers (:class:`~torch_audit.runtime.check.RuntimeCheck`), and so are
``torch-audit run``'s step counter, progress line and chart history
(:mod:`torch_audit.runtime.run_monitor`) and the framework integrations' finding log
(:mod:`torch_audit.integrations.session_owner`). ``docs/runtime.md`` ("Writing your own check")
documents the events with an example.

This module is torch-free: the catalogue imports it when it lists the runtime checks.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: event name → the method called and what it receives
EVENT_METHODS: dict[str, str] = {
    "forward": "on_forward(module, args, output): after every module forward (keep it cheap)",
    "root_forward": "on_root_forward(module): before the forward of an outermost module",
    "root_forward_end": "on_root_forward_end(module): after it (also when it raised)",
    "backward": "on_backward(event): Tensor.backward/torch.autograd.backward starts (BackwardEvent)",
    "backward_end": "on_backward_end(event): it returned",
    "step_pre": "on_step_pre(ctx): before optimizer.step() (StepContext)",
    "step_post": "on_step_post(ctx): after optimizer.step()",
    "cross_entropy": "on_cross_entropy(event): a cross-entropy or NLL loss call (CallEvent)",
    "relu": "on_relu(event): the output of an nn.ReLU module (CallEvent)",
    "finding": "on_finding(finding): a new finding was recorded (not its repeats)",
    "finish": "on_finish(): the session ends normally (the last chance to report)",
}

EVENTS = frozenset(EVENT_METHODS)


class Subscriber:
    """Base class of session subscribers (optional: any object with ``events`` and the
    ``on_<event>`` methods works). An exception raised by a subscriber's method disables that
    subscriber for the rest of the session and training goes on: a check's becomes a
    ``runtime-internal-error`` finding, any other's a note in the report. ``BaseException``\\ s
    that are not ``Exception`` (``KeyboardInterrupt``, ``torch-audit run``'s ``--max-steps``
    stop) pass through."""

    #: the events this subscriber needs: the session installs a torch hook only for events
    #: that some subscriber asks for
    events: ClassVar[frozenset[str]] = frozenset()
    #: False once one of its methods raised; the session then stops calling it
    enabled: bool = True
    #: ``on_forward`` only for modules of these classes (None: every module); read when the
    #: session first sees a class, so set it in ``setup`` at the latest
    forward_types: tuple[type, ...] | None = None
    #: ``on_forward`` only while gradients are on (True) or off (False); None: both
    forward_grad: bool | None = None

    #: also call ``on_step_post`` for the optimizer steps of unaudited passes (with
    #: ``ctx.audited`` False and nothing computed): for subscribers that count steps
    light_step_post: bool = False

    def needs_every_pass(self) -> bool:
        """Whether this subscriber must see every training pass from now on. Under a cost
        budget the session audits short passes in bursts (``docs/runtime.md``, "Short
        passes"), and asks this before it leaves a pass unaudited: True (the default, for a
        subscriber written without sampling in mind) keeps every pass audited while it holds.
        A subscriber of ``finding``/``finish`` alone is never asked."""
        return True

    def setup(self) -> None:
        """Called when the session starts (or when subscribed to a running session)."""

    def close(self) -> None:
        """Called once when the session ends, also on exceptions: drop tensor references."""


def validate_events(cls: type) -> list[str]:
    """Problems with a subscriber's event declaration (used by meta-tests)."""
    problems = []
    events = getattr(cls, "events", frozenset())
    unknown = set(events) - EVENTS
    if unknown:
        problems.append(f"{cls.__name__}: unknown events {sorted(unknown)}")
    for event in events:
        if getattr(cls, f"on_{event}", None) is None:
            problems.append(f"{cls.__name__}: subscribes to {event!r} but has no on_{event}")
    return problems


def describe(subscriber: Any) -> str:
    """How a subscriber is named in a note: its check code and name, or its class."""
    code = getattr(subscriber, "code", None)
    if code and getattr(subscriber, "name", None):
        return f"check {subscriber.name} ({code})"
    return f"subscriber {type(subscriber).__name__}"
