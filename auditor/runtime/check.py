"""The base class of runtime checks.

A runtime check is a :class:`~torch_audit.rule.Rule` (same metadata, docs and catalogue as the
static rules) and a :class:`~torch_audit.runtime.subscribers.Subscriber` of the session: it lists
the events it needs in :attr:`RuntimeCheck.events` and the session calls the matching
``on_<event>`` methods (the events are listed in :mod:`torch_audit.runtime.subscribers` and
``docs/runtime.md``). The session installs a global hook only for events that some subscriber
needs. This module must stay importable without torch: rule modules import it when the
catalogue is listed; what a check may use of the runtime is in
:mod:`torch_audit.runtime.check_helpers` (imported inside methods).

Device work is deferred: a check hands a device tensor and a callback to
``self.defer(tensor, callback)``; the session reads everything deferred in one host transfer per
optimizer step and calls the callbacks with plain Python floats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch_audit.findings import Finding
from torch_audit.rule import Rule
from torch_audit.runtime.errors import AuditFailure
from torch_audit.runtime.subscribers import EVENTS, Subscriber, validate_events

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import AuditSession


class RuntimeCheck(Rule, Subscriber):
    """A check run by the runtime session. Subclasses set ``events`` and the ``on_*`` methods."""

    kind: ClassVar[str] = "runtime"
    #: The session events this check needs (a subset of :data:`EVENTS`).
    events: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, session: "AuditSession", options: dict[str, Any] | None = None) -> None:
        self.session = session
        self.opts: dict[str, Any] = {**self.default_options(), **(options or {})}
        self.enabled = True

    # -- lifecycle ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Called once when the session starts (torch is importable here)."""

    def close(self) -> None:
        """Called once when the session ends, also on exceptions. Drop tensor references."""

    def needs_every_pass(self) -> bool:
        """Checks hold no state a skipped pass invalidates, unless they say so (a check that
        is following something across consecutive passes returns True while it does)."""
        return False

    # -- helpers ------------------------------------------------------------------------------
    def defer(self, tensor: Any, callback: Any) -> None:
        """Read ``tensor`` (any shape, on any device) with the session's next host transfer and
        call ``callback(values: list[float])``; errors in the callback disable this check."""
        self.session.defer(tensor, callback, owner=self)

    # -- reporting ----------------------------------------------------------------------------
    def report(
        self,
        subject: str,
        *,
        step: int | None = None,
        module: str | None = None,
        value: float | str | None = None,
        path: str | None = None,
        line: int | None = None,
        message: str | None = None,
        help: str | None = None,
        related: tuple[tuple[str, int, str], ...] = (),
        **fmt: Any,
    ) -> Finding:
        """Record a finding about ``subject`` (de-duplicated per code and subject).

        Its ``help`` is :attr:`fix_title` formatted with ``fmt``, unless ``help`` is given.
        ``related`` are other places the finding rests on, ``(path, line, what is there)``."""
        text = message if message is not None else self.message.format(**fmt)
        hint = help if help is not None else self.format_help(fmt)
        try:
            finding = self.session.add_finding(
                self,
                subject,
                text,
                step=step,
                module=module,
                value=value,
                path=path,
                line=line,
                related=related,
            )
        except AuditFailure as exc:  # fail_fast: the finding is recorded, then raised
            if exc.finding.code == self.code and exc.finding.help is None:
                exc.finding.help = hint
            raise
        if finding.help is None:  # a repeat keeps the help of the first report
            finding.help = hint
        return finding

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} {self.name}>"


__all__ = ["EVENTS", "RuntimeCheck", "validate_events"]
