"""Run a script inside one audit session and say how it ended: :func:`audit_script` and its
:class:`RunOutcome` (``torch-audit run``'s core, also its Python API; the tests use it).

The session is created from a resolved :class:`~torch_audit.runtime.settings.RuntimeSelection`
(or, for callers of the Python API, from :func:`torch_audit.audit`'s keyword arguments), and
:class:`~torch_audit.runtime.run_monitor.RunMonitor` subscribes to it for the step counts,
``--max-steps``, the progress line and the chart history.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Any, TextIO

from torch_audit.findings import Finding
from torch_audit.runtime import script as script_runner
from torch_audit.runtime.pass_sampling import DEFAULT_BUDGET
from torch_audit.runtime.run_history import History
from torch_audit.runtime.run_monitor import MaxStepsReached, RunMonitor, status_line_aware_streams
from torch_audit.runtime.settings import RuntimeSelection
from torch_audit.runtime.startup_objects import startup_frozen

__all__ = ["RunOutcome", "audit_script"]


@dataclasses.dataclass
class RunOutcome:
    """How an audited script ended and what was found."""

    findings: list[Finding]
    #: the script's own exit status (0 when it finished or ``--max-steps`` stopped it)
    status: int = 0
    #: the uncaught exception (not ``SystemExit``/``KeyboardInterrupt``), if any
    exception: BaseException | None = None
    #: ``sys.exit`` was called with this ``SystemExit``
    system_exit: SystemExit | None = None
    #: an uncaught ``KeyboardInterrupt``
    interrupted: KeyboardInterrupt | None = None
    #: the session's ``fail_fast`` stopped the script
    audit_failure: BaseException | None = None
    stopped_at_max_steps: bool = False
    #: optimizer.step() calls, over all optimizers
    steps: int = 0
    #: optimizer label ("Adam", "SGD#2") → its step() calls, in first-seen order
    optimizer_steps: dict[str, int] = dataclasses.field(default_factory=dict)
    history: History | None = None
    rank: int | None = None
    #: the session's notes (e.g. that other ranks' findings could not be gathered)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == 0 and self.interrupted is None


def _new_session(selection: RuntimeSelection | None, every: int, fail_fast: bool,
                 audit_options: dict[str, Any] | None, closure_passes: str,
                 budget: float | None) -> Any:
    if selection is not None:
        from torch_audit.runtime.session import AuditSession

        return AuditSession(every=every, fail_fast=fail_fast, selection=selection,
                            closure_passes=closure_passes, budget=budget)
    from torch_audit.runtime.session import audit

    return audit(**(audit_options or {}))


def audit_script(
    target: str,
    args: list[str] | tuple[str, ...] = (),
    *,
    module: bool = False,
    audit_options: dict[str, Any] | None = None,
    selection: RuntimeSelection | None = None,
    every: int = 1,
    closure_passes: str = "first",
    budget: float | None = DEFAULT_BUDGET,
    fail_fast: bool = False,
    max_steps: int | None = None,
    progress: TextIO | None = None,
    history: bool = False,
) -> RunOutcome:
    """Run ``target`` (a script path, or a module name with ``module=True``) as ``__main__``
    inside one audit session; never raises for what the script does (its exception, exit or
    interrupt is in the returned :class:`RunOutcome`). The checks are ``selection`` (resolved
    once, with ``every``, ``closure_passes``, ``budget`` and ``fail_fast``), else the session of
    ``torch_audit.audit(**audit_options)``. Raises :class:`script_runner.ScriptNotFound`."""
    from torch_audit.runtime.causes import root_cause_first
    from torch_audit.runtime.errors import AuditFailure

    session = _new_session(selection, every, fail_fast, audit_options, closure_passes, budget)
    session.started_by = "`torch-audit run`"
    outcome = RunOutcome(findings=[])
    monitor = session.subscribe(RunMonitor(session, max_steps=max_steps, progress=progress,
                                           history=history))
    try:
        with session, status_line_aware_streams(monitor), startup_frozen():
            if module:
                script_runner.run_module(target, list(args))
            else:
                script_runner.run_script(target, list(args))
    except script_runner.ScriptNotFound:
        raise
    except MaxStepsReached:
        outcome.stopped_at_max_steps = True
    except SystemExit as exc:
        outcome.system_exit = exc
        outcome.status = script_runner.exit_status(exc)
    except KeyboardInterrupt as exc:
        outcome.interrupted = exc
        outcome.status = 128 + signal.SIGINT
    except AuditFailure as exc:
        outcome.audit_failure = exc
        outcome.status = 1
    except BaseException as exc:  # noqa: B036 - the script's own exception, reported as python does
        outcome.exception = exc
        outcome.status = 1
    if session.in_forked_child:  # only the process that opened the session reports (issue 18)
        if outcome.exception is not None:
            script_runner.report_exception(outcome.exception)
        raise SystemExit(outcome.status)
    outcome.findings = root_cause_first(list(session.findings))
    outcome.steps = monitor.steps
    outcome.optimizer_steps = dict(monitor.steps_by_optimizer)
    outcome.history = monitor.history
    outcome.rank = session.rank
    outcome.notes = list(session.notes)
    return outcome
