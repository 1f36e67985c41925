"""What the framework adapters share: option handling, the session's life (one runtime session
per training run, started and closed from the framework's callbacks), the findings as they appear
(a subscriber of the session's ``finding`` event, the public subscriber API of
``docs/runtime.md``), fail levels and the log line of a finding (the linter's text line)."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from torch_audit.findings import Finding, Severity
from torch_audit.runtime.subscribers import Subscriber

#: ``fail_on`` values: a severity, or ``"never"``/``None`` to never fail.
FAIL_LEVELS = ("error", "warning", "info", "never")


def parse_fail_on(value: str | Severity | None) -> Severity | None:
    if value is None or str(getattr(value, "value", value)).lower() in ("never", "none", "off"):
        return None
    try:
        return Severity.parse(value)
    except ValueError:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_LEVELS)}, got {value!r}") from None


def at_or_above(findings: Iterable[Finding], level: str | Severity | None) -> list[Finding]:
    """The findings whose severity is at least ``level`` (none when ``level`` is None/"never")."""
    severity = parse_fail_on(level)
    if severity is None:
        return []
    return [f for f in findings if f.severity.rank >= severity.rank]


def summarise(findings: list[Finding]) -> str:
    from torch_audit.runtime.text_report import format_text

    return format_text(findings)


def log_finding(logger: logging.Logger, finding: Finding) -> None:
    """``torch-audit: <the finding's text line>`` at the level of its severity."""
    level = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING}.get(
        finding.severity, logging.INFO
    )
    from torch_audit.runtime.text_report import finding_line

    logger.log(level, "torch-audit: %s", finding_line(finding))


class NewFindings(Subscriber):
    """Collects each new finding as the session records it (the ``finding`` event), for a
    callback to log the findings that appeared since it last asked."""

    events = frozenset({"finding"})

    def __init__(self) -> None:
        self.fresh: list[Finding] = []

    def on_finding(self, finding: Finding) -> None:
        self.fresh.append(finding)

    def take(self) -> list[Finding]:
        fresh, self.fresh = self.fresh, []
        return fresh


def _copied(selectors: Iterable[str] | str | None) -> list[str] | str | None:
    """A list of the selectors (a one-shot iterator survives a second start), a string as is."""
    return list(selectors) if selectors is not None and not isinstance(selectors, str) else selectors


class SessionOwner:
    """Starts and closes one runtime session for a framework's training run.

    The session is a context manager; frameworks call us back at the start and the end of a
    run (and, for Lightning, on an exception), so this holds the entered session between the
    callbacks and guarantees it is closed exactly once."""

    def __init__(
        self,
        *,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        every: int = 1,
        fail_fast: bool = False,
        preview: bool | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        fail_on: str | Severity | None = None,
        extend_select: Iterable[str] | None = None,
        config: Any = None,
    ) -> None:
        parse_fail_on(fail_on)  # validate early, at construction
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.select, self.ignore = _copied(select), _copied(ignore)
        self.every = every
        self.fail_fast = fail_fast
        self.preview = preview
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.extend_select = _copied(extend_select)
        self.config = config
        self.fail_on = fail_on
        self.session: Any = None
        #: named in the error when the training code opens a second session
        self.started_by = "a torch-audit training callback"
        self.findings: list[Finding] = []
        self._new = NewFindings()

    def start(self, model: Any = None, *, fail_fast: bool | None = None, sync: str = "auto") -> None:
        from torch_audit.runtime.session import audit

        self.close()
        self.findings = []
        self._new = NewFindings()
        session = audit(
            model,
            select=self.select,
            ignore=self.ignore,
            every=self.every,
            fail_fast=self.fail_fast if fail_fast is None else fail_fast,
            preview=self.preview,
            options=self.options,
            sync=sync,
            extend_select=self.extend_select,
            config=self.config,
        )
        session.started_by = self.started_by
        session.subscribe(self._new)
        session.__enter__()
        self.session = session

    @property
    def active(self) -> bool:
        return self.session is not None

    def new_findings(self) -> list[Finding]:
        """Findings that appeared since the last call (for logging them as they come)."""
        return self._new.take()

    def close(self, exc: BaseException | None = None) -> None:
        """Exit the session (idempotent). With ``exc`` the run failed: the session finishes
        without collectives and never raises ``AuditFailure`` over the original error."""
        session, self.session = self.session, None
        if session is None:
            return
        try:
            if exc is None:
                session.__exit__(None, None, None)
            else:
                session.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            self.findings = list(session.findings)

    def failures(self) -> list[Finding]:
        return at_or_above(self.findings, self.fail_on)
