"""The base class of runtime checks.

A runtime check is a :class:`~torch_audit.rule.Rule` (same metadata, docs and catalogue as the
static rules) that subscribes to session events. The session installs a global hook only for
events that some enabled check lists in :attr:`RuntimeCheck.events`, and calls the matching
``on_<event>`` method. This module must stay importable without torch: rule modules import it
when the catalogue is listed.

Events (see ``docs/runtime.md``):

``forward``       ``on_forward(module, args, output)`` after every module forward (global hook)
``backward``      ``on_backward(event)`` when ``torch.autograd.backward``/``Tensor.backward`` starts
``backward_end``  ``on_backward_end(event)`` when it returned
``step_pre``      ``on_step_pre(ctx)`` before ``optimizer.step()`` (``ctx``: a StepContext)
``step_post``     ``on_step_post(ctx)`` after ``optimizer.step()``
``cross_entropy`` ``on_cross_entropy(event)`` for ``nn.CrossEntropyLoss``/``nn.NLLLoss`` calls and
                  ``F.cross_entropy``/``F.nll_loss`` calls outside module forwards
                  (``event.loss`` says which)
``relu``          ``on_relu(event)`` for the output of an ``nn.ReLU`` module
``root_forward``  ``on_root_forward(module)`` before the forward of an outermost module
``root_forward_end`` ``on_root_forward_end(module)`` after it (also when it raised)
``finish``        ``on_finish()`` when the session exits normally

Device work is deferred: a check hands a device tensor and a callback to
``session.defer(tensor, callback)``; the session reads everything deferred in one host
transfer per optimizer step and calls the callbacks with plain Python floats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch_audit.findings import Finding
from torch_audit.rule import Rule
from torch_audit.runtime.errors import AuditFailure

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import AuditSession

EVENTS = frozenset(
    {
        "forward",
        "backward",
        "backward_end",
        "step_pre",
        "step_post",
        "cross_entropy",
        "relu",
        "root_forward",
        "root_forward_end",
        "finish",
    }
)


class RuntimeCheck(Rule):
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

    # -- helpers ------------------------------------------------------------------------------
    def defer(self, tensor: Any, callback: Any) -> None:
        """Read ``tensor`` (any shape, on any device) with the session's next host transfer and
        call ``callback(values: list[float])``; errors in the callback disable this check."""
        self.session.defer(self, tensor, callback)

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
        **fmt: Any,
    ) -> Finding:
        """Record a finding about ``subject`` (de-duplicated per code and subject).

        Its ``help`` is :attr:`fix_title` formatted with ``fmt``, unless ``help`` is given."""
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


def validate_events(cls: type[RuntimeCheck]) -> list[str]:
    """Problems with a check's event declaration (used by meta-tests)."""
    problems = []
    unknown = set(cls.events) - EVENTS
    if unknown:
        problems.append(f"{cls.__name__}: unknown events {sorted(unknown)}")
    for event in cls.events:
        if getattr(cls, f"on_{event}", None) is None:
            problems.append(f"{cls.__name__}: subscribes to {event!r} but has no on_{event}")
    return problems
