"""The runtime audit session: ``torch_audit.audit()``.

A session is a small lifecycle object: it starts, dispatches events to its subscribers, records
findings and ends. Its parts each live in their own module:

- :mod:`~torch_audit.runtime.subscribers`: the public subscriber API (the events, the base class);
- :mod:`~torch_audit.runtime.hooks`: torch's global hooks turned into events (no public torch
  object is replaced);
- :mod:`~torch_audit.runtime.events`: what subscribers receive (``StepContext``, ...);
- :mod:`~torch_audit.runtime.deferred_reads`: one host transfer per optimizer step (on CUDA
  asynchronously, one step late, unless ``fail_fast``);
- :mod:`~torch_audit.runtime.text_report`: the text report, with the linter's finding lines;
- :mod:`~torch_audit.runtime.settings`: the selection of checks and their options.

The checks are subscribers like any other; ``torch-audit run``'s monitor and the framework
integrations subscribe through the same :meth:`AuditSession.subscribe`. The session audits the
thread that opened it; other threads' events are left alone (with a note).

See ``docs/runtime.md`` for the user-facing description.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch.utils.weak import WeakIdKeyDictionary

from torch_audit.findings import Finding, Severity
from torch_audit.runtime import dist
from torch_audit.runtime.check import RuntimeCheck
from torch_audit.runtime.deferred_reads import DeferredReads
from torch_audit.runtime.errors import AuditFailure, SessionActiveError
from torch_audit.runtime.events import BackwardEvent, CallEvent, StepContext
from torch_audit.runtime.hooks import TorchHooks
from torch_audit.runtime.model_index import ModelIndex
from torch_audit.runtime.pass_sampling import DEFAULT_BUDGET, PassSampler, parse_budget
from torch_audit.runtime.settings import INTERNAL_ERROR_CODE, RuntimeSelection, resolve_options
from torch_audit.runtime.source import UserSites, class_location, display_path, is_torch_class
from torch_audit.runtime.subscribers import EVENTS, describe

__all__ = ["AuditSession", "BackwardEvent", "CallEvent", "StepContext", "active_session", "audit",
           "resolve_options"]

_state_lock = threading.Lock()
#: ``audit(budget=...)`` not given: the configuration's ``budget``, else DEFAULT_BUDGET
_CONFIGURED: Any = object()
#: events that say nothing about any one pass: a subscriber of these alone never needs every pass
_PASSLESS_EVENTS = frozenset({"finding", "finish"})
_active: "AuditSession | None" = None


def active_session() -> "AuditSession | None":
    """The session currently running, if any."""
    return _active


class AuditSession:
    """A running (or finished) audit. Create it with :func:`audit`."""

    def __init__(
        self,
        model: torch.nn.Module | Iterable[torch.nn.Module] | None = None,
        optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None = None,
        *,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        every: int = 1,
        fail_fast: bool = False,
        preview: bool = False,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        sync: str = "auto",
        extend_select: Iterable[str] | None = None,
        selection: RuntimeSelection | None = None,
        closure_passes: str = "first",
        budget: float | None = DEFAULT_BUDGET,
    ) -> None:
        """``selection``, resolved once by :func:`torch_audit.runtime.settings.resolve_selection`
        (as :func:`audit` and ``torch-audit run`` do), replaces ``select``, ``ignore``,
        ``extend_select``, ``preview`` and ``options``, which are otherwise resolved here
        without any configuration file."""
        from torch_audit.catalog import runtime_catalog
        from torch_audit.runtime.settings import resolve_selection

        budget = _checked_arguments(every, sync, closure_passes, budget)
        catalog = runtime_catalog()  # static rules from their index: libcst is not imported
        if selection is None:
            selection = resolve_selection(
                catalog, select=_selectors(select), ignore=_selectors(ignore) or (),
                extend_select=_selectors(extend_select) or (), preview=preview,
                options=[options or {}],
            )
        self.selection = selection
        self.every = every
        #: which evaluations of an optimizer's closure inside one step() are watched
        self.closure_passes = closure_passes
        #: the cost budget (None: every pass audited); :mod:`torch_audit.runtime.pass_sampling`
        self.budget = budget
        self.sampler: PassSampler | None = None
        #: optimizer steps whose closure re-evaluations ran unwatched (TorchHooks._in_step_closure)
        self.unwatched_steps = 0
        self.fail_fast = fail_fast
        self.sync = sync
        self._internal_rule = catalog.get(INTERNAL_ERROR_CODE)
        models = [] if model is None else [model] if isinstance(model, torch.nn.Module) else list(model)
        opts = [] if optimizer is None else (
            [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
        )
        self._models = [weakref.ref(m) for m in models]
        self._optimizer_filter: WeakIdKeyDictionary | None = None
        if opts:
            self._optimizer_filter = WeakIdKeyDictionary()
            for o in opts:
                self._optimizer_filter[o] = True
        self.findings: list[Finding] = []
        #: what the report must say besides the findings (e.g. that other ranks were not heard)
        self.notes: list[str] = []
        self._by_key: dict[tuple, Finding] = {}
        #: the user's step() and construction line of each optimizer (found at its first step)
        self.user_sites = UserSites()
        #: subscribers other than the checks, in subscription order (kept across pauses)
        self._subscribers: list[Any] = []
        self.step = 0
        #: optimizer.step() calls seen (all optimizers); 0 means the step checks never ran
        self.optimizer_steps = 0
        #: of them, the steps of unaudited passes (pass sampling: only counted)
        self.unaudited_steps = 0
        self.rank = None
        #: the thread whose training is audited (the one that opened the session), the
        #: process that opened it, and the other threads whose events were left alone
        self._thread = threading.get_ident()
        self._pid = os.getpid()
        self._other_threads: dict[int, str] = {}
        self._entered = False
        self._closed = False
        self._paused = False
        #: who opened the session when it is not the user's own ``with`` block (``torch-audit
        #: run``, an integration): named when a second session is refused
        self.started_by: str | None = None
        self._reset_runtime_state()

    # -- state ----------------------------------------------------------------------------------
    def _reset_runtime_state(self) -> None:
        self.index = ModelIndex()
        self.checks: list[RuntimeCheck] = []
        #: event name → ``(subscriber, its on_<event> method)``: checks first, then the others
        self._by_event: dict[str, list[tuple[Any, Callable]]] = {}
        self._hooks = TorchHooks(self)
        self._restrict_modules = False
        self._reads = DeferredReads(self._call, self._machinery_error,
                                    lambda: self.flush(collective=False), late=self._late_reads())
        self._opt_labels: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._opt_steps: WeakIdKeyDictionary = WeakIdKeyDictionary()
        #: the optimizers stepped in the session (weak keys)
        self.optimizers: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._fail_pending: Finding | None = None
        self._needs_grad_norms = False

    def _late_reads(self) -> bool:
        return self.sync == "late" or (self.sync == "auto" and not self.fail_fast)

    # -- the subscriber API ---------------------------------------------------------------------
    def subscribe(self, subscriber: Any) -> Any:
        """Call ``subscriber.on_<event>(...)`` for each event in ``subscriber.events`` (see
        :mod:`torch_audit.runtime.subscribers`), after the checks, in subscription order; returns
        the subscriber. Before the session starts or while it runs: the hooks the new events need
        are installed at once. An exception from a subscriber disables it (a note says so)."""
        events = getattr(subscriber, "events", None)
        if events is None or isinstance(events, str):
            raise TypeError(f"{describe(subscriber)} has no `events` set (e.g. frozenset({{'step_pre'}}))")
        unknown = set(events) - EVENTS
        if unknown:
            raise ValueError(f"{describe(subscriber)} asks for unknown events {sorted(unknown)} "
                             f"(known: {', '.join(sorted(EVENTS))})")
        missing = [e for e in events if not callable(getattr(subscriber, f"on_{e}", None))]
        if missing:
            raise ValueError(f"{describe(subscriber)} subscribes to {sorted(missing)} without "
                             f"{', '.join(f'on_{e}()' for e in sorted(missing))}")
        if not hasattr(subscriber, "enabled"):  # the session switches a failing subscriber off
            subscriber.enabled = True
        if self._closed:
            raise RuntimeError("this session has ended; subscribe before it ends")
        self._subscribers.append(subscriber)
        if self._entered:
            self._call(subscriber, getattr(subscriber, "setup", _nothing))
            self._add_handlers(subscriber)
            if not self._paused:
                self._hooks.remove()
                self._hooks.install(anything=True)
        return subscriber

    def unsubscribe(self, subscriber: Any) -> None:
        """Stop calling ``subscriber`` (its ``close()`` is called if the session is running)."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        for handlers in self._by_event.values():
            handlers[:] = [(s, fn) for s, fn in handlers if s is not subscriber]
        self._hooks.set_forward_subscribers(tuple(self._by_event.get("forward", ())))
        if self._entered and not self._closed:
            self._call(subscriber, getattr(subscriber, "close", _nothing))

    def _add_handlers(self, subscriber: Any) -> None:
        for event in subscriber.events:
            self._by_event.setdefault(event, []).append((subscriber, getattr(subscriber, f"on_{event}")))
        self._hooks.set_forward_subscribers(tuple(self._by_event.get("forward", ())))

    def _emit(self, event: str, *args: Any) -> None:
        # _call's guard, inlined: a few events a step, each to several subscribers
        for subscriber, fn in self._by_event.get(event, ()):
            if not subscriber.enabled:
                continue
            try:
                fn(*args)
            except AuditFailure:
                raise
            except Exception as exc:  # a subscriber must never break training
                self._subscriber_failed(subscriber, exc)

    def defer(self, tensor: torch.Tensor, callback: Callable[[list[float]], Any], *,
              owner: Any = None) -> None:
        """Read ``tensor`` (any shape, on any device) with the session's next host transfer and
        call ``callback(values)`` with its values as Python floats. An exception in the callback
        disables ``owner`` (a subscriber; None: the callback alone is dropped)."""
        self._reads.defer(owner, tensor, callback)

    @property
    def pending_reads(self) -> int:
        """How many deferred tensors wait for the next read."""
        return len(self._reads)

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "AuditSession":
        global _active
        if self._entered:
            raise SessionActiveError("this audit session was already used; create a new one")
        with _state_lock:
            if _active is not None:
                if _active.started_by:
                    raise SessionActiveError(
                        f"a torch-audit session is already active, started by "
                        f"{_active.started_by}; sessions cannot be nested: drop the inner "
                        "`torch_audit.audit()` block (the outer session audits that code already)"
                    )
                raise SessionActiveError(
                    "a torch-audit session is already active; sessions cannot be nested or run "
                    "concurrently (exit the other `with torch_audit.audit(...)` block first)"
                )
            _active = self
        self._entered = True
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._finish(clean=exc_type is None)
        finally:
            self._stop()

    def _start(self) -> None:
        self.rank = dist.rank() if dist.active() else None
        self._thread = threading.get_ident()
        self._pid = os.getpid()
        options = self.selection.options
        for rule in self.selection.rules:
            if issubclass(rule, RuntimeCheck) and rule.events:
                self.checks.append(rule(self, dict(options.get(rule.code, {}))))
        for subscriber in [*self.checks, *self._subscribers]:
            self._add_handlers(subscriber)
        for subscriber in [*self.checks, *self._subscribers]:
            self._call(subscriber, getattr(subscriber, "setup", _nothing))
        models = [m for m in (r() for r in self._models) if m is not None]
        for m in models:
            self.index.add_root(m)
        self._restrict_modules = bool(models)
        self._needs_grad_norms = any(getattr(c, "uses_grad_norms", False) for c in self.checks)
        # every rank must take the same decisions (they meet in collectives at the same steps)
        if self.budget is not None and not dist.active():
            self.sampler = PassSampler(float(self.budget))
        self._hooks.install(anything=bool(self.checks or self._subscribers))

    @contextlib.contextmanager
    def paused(self) -> Iterator["AuditSession"]:
        """Suspend the audit inside the block: every hook is removed, so the code runs exactly as
        without a session and nothing is observed; the session's state (histories, reads still
        pending, findings) is kept, and the hooks return when the block ends.

        Use it between training steps, e.g. around a validation loop the audit should not see::

            with torch_audit.audit() as session:
                for batch in train_loader:
                    train_step(batch)
                    if step % 1000 == 0:
                        with session.paused():
                            evaluate(model)
        """
        if not self._entered or self._closed:
            raise RuntimeError("paused() needs a running session (inside its `with` block)")
        if self._paused:
            raise RuntimeError("this session is already paused")
        self._hooks.remove()
        self._paused = True
        try:
            yield self
        finally:
            self._paused = False
            if not self._closed:
                self._hooks.install(anything=bool(self.checks or self._subscribers))

    def _stop(self) -> None:
        global _active
        self._hooks.remove()
        if self._hooks.alarm is not None:
            self._hooks.alarm.close()
        for subscriber in [*self.checks, *self._subscribers]:
            try:
                getattr(subscriber, "close", _nothing)()
            except Exception:
                pass
        self._closed = True
        codes = [c.code for c in self.checks]
        self._reset_runtime_state()
        self.check_codes = codes
        with _state_lock:
            if _active is self:
                _active = None

    def _finish(self, clean: bool) -> None:
        """Read what is pending, let subscribers conclude, gather findings from all ranks."""
        if self.in_forked_child:
            return  # the parent reports; the child's copy of the session ends silently
        if self._other_threads:
            names = ", ".join(sorted(self._other_threads.values()))
            self.notes.append(
                f"events of other threads ({names}) were not audited: a session audits the "
                "thread that opened it"
            )
        if self.unwatched_steps:
            n = self.unwatched_steps
            self.notes.append(
                f"in {n} optimizer step{'s' if n != 1 else ''}, the closure's re-evaluations "
                "inside step() ran unwatched (the first evaluation of each step, whose loss "
                "step() returns, was audited); audit(closure_passes='all') or `torch-audit run "
                "--closure-passes all` watches every one"
            )
        sampled = self._sampling_note()
        if sampled:
            self.notes.append(sampled)
            self._sweep_after_unaudited_passes()
        together = self._ranks_finished_together(clean)
        try:
            self.flush(final=True, collective=together)
            self._emit("finish")
            self.flush(final=True, collective=False)
        except AuditFailure:
            if clean:
                raise
        if together and dist.active():
            self._gather_ranks()
        if clean and self.fail_fast and self._fail_pending is not None:
            finding, self._fail_pending = self._fail_pending, None
            raise AuditFailure(finding)

    def _sampling_note(self) -> str | None:
        """What the report says when some training passes were not audited."""
        sampler = self.sampler
        if sampler is None or not sampler.sampling:
            return None
        audited = sampler.audited_passes
        if self.optimizer_steps:  # counted exactly: the steps of unaudited passes are seen
            counted = (f"{audited} training passes were audited, and {self.unaudited_steps} of the "
                       f"{self.optimizer_steps} optimizer steps ran in unaudited passes between them")
        else:  # nothing is seen between bursts: estimated from their time
            total = audited + sampler.unaudited_estimate(time.perf_counter())
            counted = f"{audited} of about {total} training passes were audited"
        cost = f" (auditing added {sampler.cost_ratio:.0%} to a pass)" if sampler.cost_ratio else ""
        return (f"{counted}: passes were too short for the budget of {sampler.budget * 100:g}%{cost}, "
                f"so they were audited in bursts of {sampler.BURST} with unaudited passes "
                "between; a problem that persists is found at the next burst, one confined to "
                "an unaudited pass is missed; audit(budget=None) or `torch-audit run --budget "
                "off` audits every pass")

    def _sweep_after_unaudited_passes(self) -> None:
        """The run ended in unaudited passes: what they left behind that persists (a
        non-finite parameter) is still checked, once per optimizer, by the checks that
        ``sweep_at_end`` (``on_step_post`` with the optimizer's last step)."""
        if not self.sampler.last_unaudited:
            return
        sweepers = [(s, fn) for s, fn in self._by_event.get("step_post", ())
                    if s.enabled and getattr(s, "sweep_at_end", False)]
        for optimizer in list(self.optimizers.keys()):
            count = self._opt_steps.get(optimizer, 0)
            if not count:
                continue
            ctx = StepContext(self, optimizer, count - 1, checked=True)
            for subscriber, fn in sweepers:
                self._call(subscriber, fn, ctx)

    def needs_every_pass(self) -> bool:
        """Whether some subscriber must see the next training passes (no pass may be skipped
        now): a check that is tracking something across passes, or a subscriber that does not
        say it may miss passes."""
        for subscriber in [*self.checks, *self._subscribers]:
            if not subscriber.enabled:
                continue
            ask = getattr(subscriber, "needs_every_pass", None)
            if ask is None:
                if set(subscriber.events) - _PASSLESS_EVENTS:
                    return True
            elif ask():
                return True
        return False

    def _ranks_finished_together(self, clean: bool) -> bool:
        """Under torch.distributed, whether every rank left its session cleanly, so that the
        end-of-run collectives will be met (see ``dist.check_in``); a rank that raised or never
        arrives must not leave the others waiting in a collective until the process-group
        timeout. Without torch.distributed: ``clean``."""
        if not dist.active():
            return clean
        why = dist.check_in(clean)
        if why is not None and clean:
            self.notes.append(f"findings of rank {self.rank} only; the other ranks' findings "
                              f"were not gathered: {why}")
        return why is None

    def _gather_ranks(self) -> None:
        local = [f.to_dict() for f in self.findings]
        try:
            gathered = dist.all_gather_objects(local)
        except Exception as exc:  # a rank died after agreeing: report alone rather than crash
            self.notes.append(f"findings of rank {self.rank} only; gathering the other ranks' "
                              f"findings failed: {type(exc).__name__}: {exc}")
            return
        merged: list[Finding] = []
        for rank_findings in gathered:
            for data in rank_findings:
                merged.append(Finding.from_dict(data))
        merged.sort(key=lambda f: (f.rank if f.rank is not None else -1, f.step or 0, f.code))
        self.findings = merged

    # -- guarded calls --------------------------------------------------------------------------
    def _call(self, subscriber: Any, fn: Callable, *args: Any) -> Any:
        if subscriber is not None and not subscriber.enabled:
            return None
        try:
            return fn(*args)
        except AuditFailure:
            raise
        except Exception as exc:  # a subscriber must never break training
            self._subscriber_failed(subscriber, exc)
            return None

    def _subscriber_failed(self, subscriber: Any, exc: BaseException, during: str = "") -> None:
        """``subscriber`` raised: it is disabled; a check's failure is a runtime-internal-error
        finding, another subscriber's a note."""
        if subscriber is None:
            return
        subscriber.enabled = False
        if not isinstance(subscriber, RuntimeCheck):
            self.notes.append(f"{describe(subscriber)} raised {type(exc).__name__}: {exc}; it was "
                              "disabled for the rest of the session")
            return
        if not self.selection.report_internal:
            return
        rule = self._internal_rule
        what = f"{during} for {describe(subscriber)}" if during else describe(subscriber)
        finding = self._add(
            code=INTERNAL_ERROR_CODE,
            name=getattr(rule, "name", "runtime-internal-error"),
            severity=getattr(rule, "severity", Severity.WARNING),
            subject=subscriber.code,
            message=f"{what} raised {type(exc).__name__}: {exc}; it is disabled for the rest of "
                    "this session",
            step=self.step, module=None, value=None, path="", line=1,
        )
        if finding.help is None:
            finding.help = getattr(rule, "fix_title", None)

    def _machinery_error(self, what: str, exc: BaseException, callbacks: list) -> None:
        """An exception in the session's own machinery on behalf of some subscribers: each of
        them gets one failure (a runtime-internal-error finding for a check) and stops."""
        for subscriber in {id(s): s for s, _ in callbacks}.values():
            if subscriber is not None and subscriber.enabled:
                self._subscriber_failed(subscriber, exc, during=what)

    # -- deferred reads -------------------------------------------------------------------------
    def flush(self, *, final: bool = False, collective: bool = True) -> None:
        """Read every deferred tensor with one transfer per device and run the callbacks.

        Under torch.distributed this is called at the same points on every rank; with
        ``fail_fast`` it ends with one small all-reduce so that all ranks stop together."""
        self._reads.read(final=final)
        if collective and self.fail_fast and dist.active():
            flag = torch.tensor([1.0 if self._fail_pending is not None else 0.0])
            if dist.all_reduce_sum(flag).item() > 0:  # one tiny read, fail_fast only
                # every rank knows some rank failed: all gather, all raise the same finding
                local = self._fail_pending.to_dict() if self._fail_pending is not None else None
                gathered = [d for d in dist.all_gather_objects(local) if d is not None]
                self._fail_pending = None
                raise AuditFailure(Finding.from_dict(gathered[0]) if gathered else self._remote_failure())
        elif self._fail_pending is not None and not dist.active():
            finding, self._fail_pending = self._fail_pending, None
            raise AuditFailure(finding)

    def _remote_failure(self) -> Finding:
        return Finding(
            code=INTERNAL_ERROR_CODE, name="runtime-internal-error", severity=Severity.ERROR,
            message="another rank reported an error-severity finding (fail_fast)",
            step=self.step, rank=self.rank,
        )

    # -- optimizer steps (called by the hooks) --------------------------------------------------
    def _begin_step(self, optimizer: torch.optim.Optimizer) -> StepContext | None:
        """Before ``optimizer.step()``: the step's context, the shared gradient norms, the
        ``step_pre`` event and, on checked steps, the step's one read. None: not watched."""
        if not self._watched(optimizer):
            return None
        if optimizer not in self.optimizers:  # its first step: one walk of the stack
            self.user_sites.note_step(optimizer, self.optimizer_label(optimizer))
            if self.sampler is not None and self.optimizers:
                self.sampler.restart()  # a new optimizer (a second stage): a new warm-up
        self.optimizers[optimizer] = True
        count = self._opt_steps.get(optimizer, 0)
        ctx = StepContext(self, optimizer, count, checked=count % self.every == 0)
        if ctx.checked and self._needs_grad_norms:
            try:
                ctx.grad_norms()  # symmetric under FSDP: every rank computes it at every checked step
            except Exception as exc:  # never an exception in the user's training
                self._needs_grad_norms = False
                users = [c for c in self.checks if getattr(c, "uses_grad_norms", False)]
                self._machinery_error("computing gradient norms", exc, [(c, None) for c in users])
        self._emit("step_pre", ctx)
        if ctx.checked:
            self.flush()
        return ctx

    def _end_step(self, ctx: StepContext) -> None:
        """After ``optimizer.step()``: the step is counted, then the ``step_post`` event (a
        subscriber may stop the script there: ``torch-audit run --max-steps``); the step of an
        unaudited pass goes to the subscribers that count steps (``light_step_post``) only."""
        self._opt_steps[ctx.optimizer] = ctx.step + 1
        self.optimizer_steps += 1
        try:
            if ctx.audited:
                self._emit("step_post", ctx)
            else:
                for subscriber, fn in self._by_event.get("step_post", ()):
                    if getattr(subscriber, "light_step_post", False):
                        self._call(subscriber, fn, ctx)
        finally:
            self.step = max(self.step, ctx.step + 1)

    def _light_step_pre(self, optimizer: torch.optim.Optimizer) -> bool:
        """Before ``optimizer.step()`` of an unaudited pass: True if the step must be audited
        after all (the optimizer's first step: the wiring checks see every optimizer's)."""
        return self._watched(optimizer) and optimizer not in self.optimizers

    def _light_step_post(self, optimizer: torch.optim.Optimizer) -> None:
        """After ``optimizer.step()`` of an unaudited pass: counted like any step."""
        if not self._watched(optimizer):
            return
        ctx = StepContext(self, optimizer, self._opt_steps.get(optimizer, 0), checked=False)
        ctx.audited = False
        self.unaudited_steps += 1
        self._end_step(ctx)

    def _watched(self, optimizer: torch.optim.Optimizer) -> bool:
        return self._optimizer_filter is None or optimizer in self._optimizer_filter

    def optimizer_label(self, optimizer: torch.optim.Optimizer) -> str:
        """The optimizer's name in findings: its class, numbered from the second optimizer of
        the same class on (``SGD``, ``SGD#2``)."""
        label = self._opt_labels.get(optimizer)
        if label is None:
            name = type(optimizer).__name__
            same = sum(1 for v in self._opt_labels.values() if v.split("#")[0] == name)
            label = name if same == 0 else f"{name}#{same + 1}"
            self._opt_labels[optimizer] = label
        return label

    # -- what subscribers may ask ---------------------------------------------------------------
    def _own_thread(self) -> bool:
        """Whether the event being handled comes from the audited thread. Events of other
        threads are left alone (a hook never reads state another thread may be updating, such
        as the gradients its optimizer zeroes); the report names those threads."""
        ident = threading.get_ident()
        if ident == self._thread:
            return True
        if ident not in self._other_threads and len(self._other_threads) < 8:
            self._other_threads[ident] = threading.current_thread().name
        return False

    @property
    def in_forked_child(self) -> bool:
        """True in a process forked from the one that opened the session: only the process that
        started the session reports (a child's exit must not print or write anything)."""
        return os.getpid() != self._pid

    @property
    def root_grad_enabled(self) -> bool:
        """Whether the outermost module forward running (or last run) builds a graph."""
        return self._hooks.root_grad_enabled

    def current_module(self) -> torch.nn.Module | None:
        """The innermost module whose forward is running."""
        return self._hooks.current_module()

    def root_of(self, module: torch.nn.Module) -> torch.nn.Module | None:
        return self.index.root_of(module)

    def module_location(self, module: torch.nn.Module | None) -> tuple[str, int] | None:
        """Where to point for ``module``: its class, or for torch's own classes the nearest
        enclosing user-defined module class."""
        m = module
        while m is not None:
            if not is_torch_class(type(m)):
                return class_location(m)
            m = self.index.parent(m)
        return None

    def call_site(self, module: torch.nn.Module) -> tuple[str, int] | None:
        """The line of user code that calls ``module``: the first mention of its attribute (or of
        an enclosing container's) in the ``forward`` of the nearest user-defined ancestor."""
        from torch_audit.runtime.source import attribute_use_line

        child = module
        parent = self.index.parent(child)
        while parent is not None:
            attr = next((k for k, v in parent._modules.items() if v is child), None)
            if attr is not None and not is_torch_class(type(parent)):
                return attribute_use_line(type(parent), attr)
            child, parent = parent, self.index.parent(parent)
        return None

    # -- findings -------------------------------------------------------------------------------
    def add_finding(
        self,
        check: RuntimeCheck,
        subject: str,
        message: str,
        *,
        step: int | None = None,
        module: str | torch.nn.Module | None = None,
        value: float | str | None = None,
        path: str | None = None,
        line: int | None = None,
        related: tuple[tuple[str, int, str], ...] = (),
    ) -> Finding:
        """Record a finding of ``check`` about ``subject`` (a repeat of the same code and
        subject counts up the first finding). ``module`` may be the module itself: it is named
        and, without ``path``, located."""
        module_name = None
        if isinstance(module, torch.nn.Module):
            module_name = self.index.name(module)
            if path is None:
                loc = self.module_location(module)
                if loc:
                    path, line = loc
        else:
            module_name = module
        return self._add(
            code=check.code, name=check.name, severity=check.severity, subject=subject,
            message=message, step=step, module=module_name, value=value,
            path=path or "", line=line or 1, related=related,
        )

    def _add(self, *, code: str, name: str, severity: Any, subject: str, message: str,
             step: int | None, module: str | None, value: Any, path: str, line: int,
             related: tuple[tuple[str, int, str], ...] = ()) -> Finding:
        key = (code, subject)
        found = self._by_key.get(key)
        if found is not None:
            found.count += 1
            return found
        if isinstance(value, float) and value != value:
            value = "nan"
        elif isinstance(value, float) and value in (float("inf"), float("-inf")):
            value = "inf" if value > 0 else "-inf"
        finding = Finding(
            code=code, name=name, severity=severity, message=message,
            path=display_path(path) if path else "", line=line,
            module=module, step=self.step if step is None else step, value=value, rank=self.rank,
            related=tuple((display_path(p), n, what) for p, n, what in related),
        )
        self._by_key[key] = finding
        self.findings.append(finding)
        if self.sampler is not None and finding.severity is Severity.ERROR:
            self.sampler.stop("an error was found")  # the passes after it, whole
        self._emit("finding", finding)
        if self.fail_fast and finding.severity is Severity.ERROR and code != INTERNAL_ERROR_CODE:
            if self._fail_pending is None:
                self._fail_pending = finding
            if not dist.active():
                self._fail_pending = None
                raise AuditFailure(finding)
        return finding

    # -- output ---------------------------------------------------------------------------------
    @property
    def not_checked(self) -> list[str]:
        """What did not run, for a report that must not read as "everything was checked"
        (``torch-audit run`` says the same in its own words)."""
        if not self._closed or self.optimizer_steps or not getattr(self, "check_codes", None):
            return []
        return ["no torch.optim optimizer stepped: the checks at optimizer.step() (gradients, "
                "parameters, updates, unused and frozen parameters) did not run; a hand-written "
                "update (p -= lr * p.grad) is not an optimizer step"]

    def report(self) -> str:
        """The findings as text, one per line, a summary line and the notes (with what did not
        run)."""
        from torch_audit.runtime.text_report import format_text

        return format_text(self.findings, [*self.notes, *self.not_checked])

    def print_report(self, file: Any = None) -> None:
        """Print :meth:`report` (on rank 0 only under torch.distributed; never in a process
        forked from the one that opened the session)."""
        if self.rank not in (None, 0) or self.in_forked_child:
            return
        print(self.report(), file=file)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps([f.to_dict() for f in self.findings], indent=indent)

    @property
    def codes(self) -> list[str]:
        return sorted({f.code for f in self.findings})


def _nothing() -> None:
    return None


def _checked_arguments(every: Any, sync: Any, closure_passes: Any, budget: Any) -> float | None:
    """Raise ValueError for a bad ``every``, ``sync``, ``closure_passes`` or ``budget``;
    the budget as a fraction (or None)."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if sync not in ("auto", "step", "late"):
        raise ValueError(f"sync must be 'auto', 'step' or 'late', got {sync!r}")
    if closure_passes not in ("first", "all"):
        raise ValueError(f"closure_passes must be 'first' or 'all', got {closure_passes!r}")
    if budget is None:
        return None
    try:
        return parse_budget(budget)
    except ValueError as exc:
        raise ValueError(f"budget: {exc}") from None


def _selectors(value: str | Iterable[str] | None) -> list[str] | None:
    """``"TA7"`` → ``["TA7"]``; an iterable → a list; None stays None ("not given")."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def audit(
    model: torch.nn.Module | Iterable[torch.nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None = None,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
    extend_select: Iterable[str] | None = None,
    every: int = 1,
    closure_passes: str = "first",
    fail_fast: bool = False,
    preview: bool | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    sync: str = "auto",
    config: str | os.PathLike[str] | bool | None = None,
    budget: float | str | None = _CONFIGURED,
    **rule_options: Mapping[str, Any],
) -> AuditSession:
    """Audit the training code run inside the ``with`` block.

    ``model``/``optimizer`` restrict the audit to those objects (default: every module and
    optimizer used in the block). ``select``/``ignore``/``extend_select`` take codes, prefixes
    or names as the linter does; ``preview=True`` enables preview checks. ``every=N`` runs the
    numeric step checks on every N-th optimizer step. ``closure_passes`` says which evaluations
    of an optimizer's closure inside one ``step()`` are watched: ``"first"`` (the one whose loss
    ``step()`` returns; LBFGS's line-search re-evaluations then run at torch's own speed) or
    ``"all"``. ``fail_fast=True`` raises
    :class:`~torch_audit.runtime.AuditFailure` on the first error-severity finding.
    Per-check options: ``options={"exploding-gradient": {"factor": 10}}``, or as keywords with
    underscores, ``exploding_gradient={"factor": 10}``. ``sync`` chooses when flags are read on
    CUDA: ``"late"`` (asynchronously, one step later), ``"step"`` (in the step), ``"auto"``
    (late unless ``fail_fast``). ``budget`` is the share of a training pass the audit may add
    before short passes are sampled: when auditing a pass adds more (passes of a fraction of a
    millisecond), bursts of passes are audited with unaudited passes between, and the report
    says how many were audited (see ``docs/runtime.md``, "Short passes"); ``budget=None``
    audits every pass. Not given: the configuration's ``budget``, else 0.02.

    The settings start from ``[tool.torch-audit]`` of the nearest ``pyproject.toml`` (from the
    current directory upwards; ``config=`` a path to use that file instead, ``config=False`` to
    read none); the keyword arguments take precedence as the linter's command line does over the
    file: ``select`` starts afresh (the file's ``select``, ``ignore`` and ``extend-select`` no
    longer count), ``ignore``/``extend_select`` adjust the file's selection, ``preview``
    replaces it unless None, options override it key by key. A bad file raises
    :class:`torch_audit.config.ConfigError`.
    """
    from torch_audit.catalog import runtime_catalog
    from torch_audit.config import ConfigError
    from torch_audit.runtime import settings

    keyword_options: dict[str, Any] = {}
    for key, values in rule_options.items():
        if not isinstance(values, Mapping):
            raise TypeError(
                f"unexpected keyword argument {key!r}: per-check options are dicts, "
                f"e.g. {key}={{...}}"
            )
        keyword_options[key.replace("_", "-")] = values
    catalog = runtime_catalog()  # static rules from their index: libcst is not imported
    try:
        project = settings.project_config(config, catalog)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None  # one line about the file, not the loader's frames
    selection = settings.resolve_selection(
        catalog, config=project, select=_selectors(select), ignore=_selectors(ignore) or (),
        extend_select=_selectors(extend_select) or (), preview=preview,
        options=[options or {}, keyword_options],
    )
    if budget is _CONFIGURED:
        budget = project.budget
    return AuditSession(model, optimizer, every=every, fail_fast=fail_fast, sync=sync,
                        selection=selection, closure_passes=closure_passes, budget=budget)
