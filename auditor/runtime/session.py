"""The runtime audit session: ``torch_audit.audit()``.

One context manager installs *global* hooks (module forward pre/post hooks, optimizer step
pre/post hooks) and, when an enabled check needs ``backward()`` or loss-function calls, a
:class:`~torch.overrides.TorchFunctionMode` that is on the stack only between the end of a model
forward and the ``backward()`` call (``intercept.py``), and removes all of them on exit, also
when the block raises. No public torch object is replaced or wrapped. The session audits the
thread that opened it; other threads' events are left alone (with a note).

Checks hand device tensors to :meth:`AuditSession.defer`; the session reads
everything deferred with one host transfer per optimizer step (on CUDA asynchronously, one step
late, unless ``fail_fast``), so a training step costs at most one synchronisation.

See ``docs/runtime.md`` for the user-facing description.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch.utils.weak import WeakIdKeyDictionary

from torch_audit.findings import Finding, Severity
from torch_audit.runtime import dist, reduce
from torch_audit.runtime.check import RuntimeCheck
from torch_audit.runtime.errors import AuditFailure, SessionActiveError
from torch_audit.runtime.model_index import ModelIndex
from torch_audit.runtime.intercept import CallWindow
from torch_audit.runtime.settings import INTERNAL_ERROR_CODE
from torch_audit.runtime.source import (
    UserSites, class_location, display_path, is_torch_class, user_site,
)

__all__ = ["AuditSession", "StepContext", "audit", "active_session"]

#: Device types whose deferred reads are copied to the host asynchronously and read a step
#: later (the tests add "cpu" to run this path without a GPU).
ASYNC_READ_DEVICES = frozenset({"cuda"})


def start_host_copy(flat: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Start copying ``flat`` to pinned host memory without waiting: the event to ``query()``
    (done yet?) or ``synchronize()`` on, and the host tensor that holds the values once it is."""
    host = torch.empty(flat.shape, dtype=flat.dtype, device="cpu", pin_memory=True)
    host.copy_(flat, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return event, host


#: deferred reads held at most before they are read without waiting for an optimizer step
MAX_PENDING = 1024

_state_lock = threading.Lock()
_active: "AuditSession | None" = None


def active_session() -> "AuditSession | None":
    """The session currently running, if any."""
    return _active


try:
    _compiling = torch.compiler.is_compiling
except AttributeError:  # pragma: no cover - old torch
    def _compiling() -> bool:
        return False


def stack_scalars(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack 0-d tensors into one float32 vector (converting only when needed)."""
    first = tensors[0]
    if all(t.dtype == torch.float32 and t.device == first.device for t in tensors):
        return torch.stack(tensors)
    return torch.stack([t.to(first.device, torch.float32) for t in tensors])


#: loss modules whose calls are ``cross_entropy`` events (``NLLLoss`` flagged as such)
_LOSS_MODULES = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)


def readable(tensor: torch.Tensor) -> torch.Tensor | None:
    """The plain tensor to read for a deferred value, or None when it holds no data to read:
    a DTensor gives its local shard; meta and fake tensors (a shape probe under
    ``torch.device("meta")``, a trace under ``FakeTensorMode``) and other tensor subclasses that
    are not plain tensors are skipped, silently: they are not training."""
    t = dist.local(tensor)
    if t.device.type == "meta" or _is_fake(t):
        return None
    if type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter):
        return t
    return None


def _is_fake(t: torch.Tensor) -> bool:
    try:
        from torch._subclasses.fake_tensor import is_fake
    except Exception:  # pragma: no cover - a torch without it
        return False
    return is_fake(t)


def _first_tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for t in output if isinstance(t, torch.Tensor)]
    if isinstance(output, Mapping):
        return [t for t in output.values() if isinstance(t, torch.Tensor)]
    return []


class BackwardEvent:
    """``torch.autograd.backward`` / ``Tensor.backward`` was called on ``tensors``."""

    __slots__ = ("tensors", "_value", "_site")

    def __init__(self, tensors: tuple[torch.Tensor, ...]) -> None:
        self.tensors = tensors
        self._value: torch.Tensor | None = None
        self._site: tuple[str, int] | None | bool = False

    @property
    def value(self) -> torch.Tensor | None:
        """A detached 1-element float tensor: the loss (or the sum of a non-scalar root)."""
        if self._value is None:
            vals = [t.detach() for t in self.tensors if t.is_floating_point()]
            if not vals:
                return None
            v = vals[0] if len(vals) == 1 and vals[0].numel() == 1 else torch.stack(
                [x.float().sum() for x in vals]
            ).sum()
            self._value = v.reshape(1)
        return self._value

    @property
    def site(self) -> tuple[str, int] | None:
        if self._site is False:
            self._site = user_site(2)
        return self._site  # type: ignore[return-value]


class CallEvent:
    """A loss call (``F.cross_entropy``/``F.nll_loss`` and their modules) or an ``nn.ReLU``
    output."""

    __slots__ = ("input", "target", "output", "kwargs", "module", "loss", "_site")

    def __init__(self, input: Any, target: Any = None, output: Any = None,
                 kwargs: dict | None = None, module: torch.nn.Module | None = None) -> None:
        #: for loss events: "cross_entropy" or "nll_loss" (which expects log-probabilities)
        self.loss = "cross_entropy"
        self.input = input
        self.target = target
        self.output = output
        self.kwargs = kwargs or {}
        self.module = module
        self._site: Any = False

    @property
    def site(self) -> tuple[str, int] | None:
        if self._site is False:
            self._site = user_site(2)
        return self._site


class StepContext:
    """What the checks see of one ``optimizer.step()``; device quantities are computed once."""

    def __init__(self, session: "AuditSession", optimizer: torch.optim.Optimizer, step: int,
                 checked: bool) -> None:
        self.session = session
        self.optimizer = optimizer
        self.step = step
        #: False on steps skipped by ``every=N``: checks do no device work then.
        self.checked = checked
        self.label = session.optimizer_label(optimizer)
        self._params: list[torch.Tensor] | None = None
        self._grad_norms: torch.Tensor | None = None
        self._has_grad: list[bool] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        if self._params is None:
            seen: set[int] = set()
            out = []
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
            self._params = out
        return self._params

    @property
    def has_grad(self) -> list[bool]:
        if self._has_grad is None:
            self._has_grad = [p.grad is not None for p in self.params]
        return self._has_grad

    def grad_norms(self) -> torch.Tensor:
        """Per-parameter L2 gradient norms (0 where ``grad is None``), one fused
        ``torch._foreach_norm`` and one stack; under FSDP summed over ranks (symmetrically)."""
        if self._grad_norms is None:
            self._grad_norms = self.session._compute_grad_norms(self.params, self.has_grad)
        return self._grad_norms

    def name(self, param: torch.Tensor, index: int | None = None) -> str:
        fallback = None
        if index is not None:
            fallback = f"{self.label}.params[{index}] {tuple(param.shape)}"
        return self.session.index.param_name(param, fallback)


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
    ) -> None:
        from torch_audit.catalog import Layer, load_catalog

        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if sync not in ("auto", "step", "late"):
            raise ValueError(f"sync must be 'auto', 'step' or 'late', got {sync!r}")
        select, ignore = _selectors(select), _selectors(ignore) or []
        catalog = load_catalog()
        self.every = every
        self.fail_fast = fail_fast
        self.sync = sync
        resolved = catalog.resolve(
            [Layer(select, ignore, _selectors(extend_select) or ())], preview=preview, kind="runtime"
        )
        self._rules = resolved.rules
        self._report_internal = INTERNAL_ERROR_CODE not in resolved.ignored
        self._internal_rule = catalog.get(INTERNAL_ERROR_CODE)
        self._options = resolve_options(catalog, options)
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
        #: callables given each ``backward()`` event after the checks (``torch-audit run``'s
        #: progress line and charts read the loss there); add them before the session starts
        self.backward_listeners: list[Callable[[Any], None]] = []
        self.step = 0
        #: optimizer.step() calls seen (all optimizers); 0 means the step checks never ran
        self.optimizer_steps = 0
        self.rank = None
        #: the thread whose training is audited (the one that opened the session), the
        #: process that opened it, and the other threads whose events were left alone
        self._thread = threading.get_ident()
        self._pid = os.getpid()
        self._other_threads: dict[int, str] = {}
        self._entered = False
        self._closed = False
        self._paused = False
        self._reset_runtime_state()

    # -- state ----------------------------------------------------------------------------------
    def _reset_runtime_state(self) -> None:
        self.index = ModelIndex()
        self.checks: list[RuntimeCheck] = []
        self._by_event: dict[str, list[RuntimeCheck]] = {}
        self._forward_checks: tuple[RuntimeCheck, ...] = ()
        self._handles: list[Any] = []
        self._window: CallWindow | None = None
        self._stack: list[torch.nn.Module] = []
        self._root: torch.nn.Module | None = None
        self.root_grad_enabled = True
        self._restrict_modules = False
        self._pending: list[tuple[torch.Tensor, list[tuple[RuntimeCheck, Callable]]]] = []
        self._pending_ids: dict[int, int] = {}
        self._inflight: list[tuple[Any, torch.Tensor, list]] = []
        self._opt_labels: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._opt_steps: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._contexts: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.optimizers: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._backward_depth = 0
        self._fail_pending: Finding | None = None
        self._zero = None
        self._needs_grad_norms = False
        #: who opened the session when it is not the user's own ``with`` block (``torch-audit
        #: run``, an integration): named when a second session is refused
        self.started_by: str | None = None

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
        for rule in self._rules:
            if not issubclass(rule, RuntimeCheck) or not rule.events:
                continue
            check = rule(self, self._options.get(rule.code))
            self.checks.append(check)
        for check in self.checks:
            for event in check.events:
                self._by_event.setdefault(event, []).append(check)
        self._forward_checks = tuple(self._by_event.get("forward", ()))
        for check in list(self.checks):
            self._call(check, check.setup)
        models = [m for m in (r() for r in self._models) if m is not None]
        for m in models:
            self.index.add_root(m)
        self._restrict_modules = bool(models)
        self._needs_grad_norms = any(
            getattr(c, "uses_grad_norms", False) for c in self.checks
        )
        self._install()

    def _install(self) -> None:
        ev = self._by_event
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module

        # forward hooks are needed for names and roots whenever anything module-related runs
        if self.checks:
            self._handles.append(nn_module.register_module_forward_pre_hook(self._forward_pre))
            self._handles.append(
                nn_module.register_module_forward_hook(self._forward_post, always_call=True)
            )
            # layers added or parameters replaced inside the block must get names too
            self._handles.append(nn_module.register_module_module_registration_hook(self.index.registered))
            self._handles.append(nn_module.register_module_parameter_registration_hook(self.index.registered))
        if any(e in ev for e in ("step_pre", "step_post")) or self.checks:
            self._handles.append(optim_module.register_optimizer_step_pre_hook(self._step_pre))
            self._handles.append(optim_module.register_optimizer_step_post_hook(self._step_post))
        handlers: dict[Any, Callable] = {}
        if "backward" in ev or "backward_end" in ev or self.backward_listeners:
            handlers[torch.Tensor.backward] = self._on_backward_call
            handlers[torch.autograd.backward] = self._on_backward_call
        if "cross_entropy" in ev:
            F = torch.nn.functional
            handlers[F.cross_entropy] = self._on_loss_call
            handlers[F.nll_loss] = self._on_loss_call
        self._window = CallWindow(handlers) if handlers else None

    def _uninstall(self) -> None:
        for handle in reversed(self._handles):
            try:
                handle.remove()
            except Exception:  # pragma: no cover - a handle whose dict is gone
                pass
        if self._window is not None:
            self._window.close()
        self._window = None
        self._handles = []

    @contextlib.contextmanager
    def paused(self) -> Iterator["AuditSession"]:
        """Suspend the audit inside the block: every hook and patch is removed, so the code runs
        exactly as without a session and nothing is observed; the session's state (histories,
        reads still pending, findings) is kept, and the hooks return when the block ends.

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
        self._uninstall()
        self._paused = True
        try:
            yield self
        finally:
            self._paused = False
            if not self._closed:
                self._stack = []
                self._install()

    def _stop(self) -> None:
        global _active
        self._uninstall()
        for check in self.checks:
            try:
                check.close()
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
        """Read what is pending, let checks conclude, gather findings from all ranks."""
        if self.in_forked_child:
            return  # the parent reports; the child's copy of the session ends silently
        if self._other_threads:
            names = ", ".join(sorted(self._other_threads.values()))
            self.notes.append(
                f"events of other threads ({names}) were not audited: a session audits the "
                "thread that opened it"
            )
        together = self._ranks_finished_together(clean)
        try:
            self.flush(final=True, collective=together)
            for check in self._by_event.get("finish", ()):
                self._call(check, check.on_finish)
            self.flush(final=True, collective=False)
        except AuditFailure:
            if clean:
                raise
        if together and dist.active():
            self._gather_ranks()
        if clean and self.fail_fast and self._fail_pending is not None:
            finding, self._fail_pending = self._fail_pending, None
            raise AuditFailure(finding)

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

    # -- dispatch helpers -----------------------------------------------------------------------
    def _call(self, check: RuntimeCheck, fn: Callable, *args: Any) -> Any:
        if not check.enabled:
            return None
        try:
            return fn(*args)
        except AuditFailure:
            raise
        except Exception as exc:  # a check must never break training
            self._internal_error(check, exc)
            return None

    def _internal_error(self, check: RuntimeCheck, exc: BaseException, during: str = "") -> None:
        check.enabled = False
        if not self._report_internal:
            return
        rule = self._internal_rule
        what = f"{during} for check {check.name} ({check.code})" if during else \
            f"check {check.name} ({check.code})"
        msg = (
            f"{what} raised {type(exc).__name__}: {exc}; "
            "it is disabled for the rest of this session"
        )
        finding = self._add(
            code=INTERNAL_ERROR_CODE,
            name=getattr(rule, "name", "runtime-internal-error"),
            severity=getattr(rule, "severity", Severity.WARNING),
            subject=check.code,
            message=msg,
            step=self.step,
            module=None,
            value=None,
            path="",
            line=1,
        )
        if finding.help is None:
            finding.help = getattr(rule, "fix_title", None)

    # -- deferred reads -------------------------------------------------------------------------
    def defer(self, check: RuntimeCheck, tensor: torch.Tensor, callback: Callable) -> None:
        key = id(tensor)
        slot = self._pending_ids.get(key)
        if slot is not None and self._pending[slot][0] is tensor:
            self._pending[slot][1].append((check, callback))
            return
        self._pending_ids[key] = len(self._pending)
        self._pending.append((tensor, [(check, callback)]))
        if len(self._pending) >= MAX_PENDING:
            # no optimizer step reads them (a hand-written update, an inference loop): read now
            # rather than hold every step's tensors until the end
            self.flush(collective=False)

    def _late(self, device: torch.device) -> bool:
        if device.type not in ASYNC_READ_DEVICES:
            return False
        if self.sync == "late":
            return True
        return self.sync == "auto" and not self.fail_fast

    def flush(self, *, final: bool = False, collective: bool = True) -> None:
        """Read every deferred tensor with one transfer per device and run the callbacks.

        Under torch.distributed this is called at the same points on every rank; with
        ``fail_fast`` it ends with one small all-reduce so that all ranks stop together."""
        batch, self._pending, self._pending_ids = self._pending, [], {}
        # finished asynchronous reads from earlier steps first (CUDA)
        self._drain_inflight(wait=final)
        by_device: dict[Any, list] = {}
        for tensor, callbacks in batch:
            try:
                plain = readable(tensor)
            except Exception as exc:  # a tensor type nobody foresaw: its checks stop
                self._machinery_error("reading a deferred value", exc, callbacks)
                continue
            if plain is not None:
                by_device.setdefault(plain.device, []).append((plain, callbacks))
        for device, items in by_device.items():
            try:
                self._read_group(device, items, final)
            except AuditFailure:
                raise
            except Exception as exc:  # never an exception in the user's training
                self._machinery_error("reading deferred values", exc,
                                      [cb for _, callbacks in items for cb in callbacks])
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

    def _read_group(self, device: torch.device, items: list, final: bool) -> None:
        flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t, _ in items])
        if self._late(device) and not final:
            self._inflight.append((*start_host_copy(flat), items))
        else:
            self._deliver(flat.tolist(), items)

    def _machinery_error(self, what: str, exc: BaseException, callbacks: list) -> None:
        """An exception in the session's own machinery on behalf of some checks: each of them
        gets one runtime-internal-error finding and stops; training goes on."""
        for check in {id(c): c for c, _ in callbacks}.values():
            if check.enabled:
                self._internal_error(check, exc, during=what)

    def _remote_failure(self) -> Finding:
        return Finding(
            code=INTERNAL_ERROR_CODE, name="runtime-internal-error", severity=Severity.ERROR,
            message="another rank reported an error-severity finding (fail_fast)",
            step=self.step, rank=self.rank,
        )

    def _drain_inflight(self, wait: bool) -> None:
        keep = []
        for event, host, items in self._inflight:
            if wait:
                event.synchronize()
            elif not event.query():
                keep.append((event, host, items))
                continue
            self._deliver(host.tolist(), items)
        self._inflight = keep

    def _deliver(self, values: list[float], items: list) -> None:
        offset = 0
        for tensor, callbacks in items:
            n = tensor.numel()
            part = values[offset:offset + n]
            offset += n
            for check, cb in callbacks:
                self._call(check, cb, part)

    # -- gradient norms -------------------------------------------------------------------------
    def _compute_grad_norms(self, params: list[torch.Tensor], has_grad: list[bool]) -> torch.Tensor:
        grads = []
        with torch.no_grad():
            return self._grad_norms_impl(params, has_grad, grads)

    def _grad_norms_impl(self, params, has_grad, grads) -> torch.Tensor:
        for p, h in zip(params, has_grad):
            if h:
                g = dist.local(p.grad)
                if g.is_sparse:
                    g = g.coalesce()._values()
                grads.append(g)
        vector = reduce.norm_vector(grads) if grads else None
        device = vector.device if vector is not None else (
            params[0].device if params else torch.device("cpu"))
        if vector is not None and len(grads) == len(params):
            out = vector
        else:
            out = torch.zeros(len(params), device=device)
            if vector is not None:
                out[[i for i, h in enumerate(has_grad) if h]] = vector
        if dist.active() and any(dist.is_sharded(p) for p in params):
            out = dist.all_reduce_sum(out.square()).sqrt()
        return out

    # -- hooks ----------------------------------------------------------------------------------
    def _forward_pre(self, module: torch.nn.Module, args: Any) -> None:
        if _compiling() or not self._own_thread():
            return
        stack = self._stack
        if not stack:
            if self._window is not None:
                self._window.close()  # forwards run without the mode (fast paths, cost)
            if self._restrict_modules:
                if not self.index.knows(module):
                    stack.append(module)
                    return
            else:
                self.index.add_root(module)
            self._root = module
            # Without gradients but with inputs that require them, a forward runs inside an
            # autograd Function: reentrant activation checkpointing runs its segment so (and
            # again in backward). That is training, not an inference pass.
            self.root_grad_enabled = torch.is_grad_enabled() or any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args
            )
            for check in self._by_event.get("root_forward", ()):
                self._call(check, check.on_root_forward, module)
        stack.append(module)

    def _forward_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if _compiling() or not self._own_thread():
            return
        stack = self._stack
        if stack and stack[-1] is module:
            stack.pop()
        elif module in stack:  # pragma: no cover - unbalanced (exception inside a child)
            del stack[stack.index(module):]
        if not stack:
            if module is self._root:
                for check in self._by_event.get("root_forward_end", ()):
                    self._call(check, check.on_root_forward_end, module)
            if self._window is not None:
                self._window.open()  # the loss and the backward() call come next
        if output is None:
            return
        cls = type(module)
        if cls in _LOSS_MODULES and "cross_entropy" in self._by_event and len(args) >= 2 \
                and isinstance(args[0], torch.Tensor):
            self._emit_loss(args[0], args[1], {}, cls is torch.nn.NLLLoss, module)
        if self._restrict_modules and not self.index.knows(module):
            return
        if cls is torch.nn.ReLU and "relu" in self._by_event and isinstance(output, torch.Tensor):
            event = CallEvent(None, output=output, module=module)
            for check in self._by_event["relu"]:
                self._call(check, check.on_relu, event)
        for check in self._forward_checks:
            if check.enabled:
                try:
                    check.on_forward(module, args, output)
                except AuditFailure:
                    raise
                except Exception as exc:  # a check must never break training
                    self._internal_error(check, exc)

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

    def current_module(self) -> torch.nn.Module | None:
        return self._stack[-1] if self._stack else None

    def root_of(self, module: torch.nn.Module) -> torch.nn.Module | None:
        return self.index.root_of(module)

    def _watched(self, optimizer: torch.optim.Optimizer) -> bool:
        return self._optimizer_filter is None or optimizer in self._optimizer_filter

    def optimizer_label(self, optimizer: torch.optim.Optimizer) -> str:
        label = self._opt_labels.get(optimizer)
        if label is None:
            name = type(optimizer).__name__
            same = sum(1 for v in self._opt_labels.values() if v.split("#")[0] == name)
            label = name if same == 0 else f"{name}#{same + 1}"
            self._opt_labels[optimizer] = label
        return label

    def _step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._own_thread():
            return
        if self._window is not None:
            self._window.close()  # the update runs without the mode
        if not self._watched(optimizer):
            return
        if optimizer not in self.optimizers:  # its first step: one walk of the stack
            self.user_sites.note_step(optimizer, self.optimizer_label(optimizer))
        self.optimizers[optimizer] = True
        count = self._opt_steps.get(optimizer, 0)
        ctx = StepContext(self, optimizer, count, checked=count % self.every == 0)
        self._contexts[optimizer] = ctx
        if ctx.checked and self._needs_grad_norms:
            try:
                ctx.grad_norms()  # symmetric under FSDP: every rank computes it at every checked step
            except Exception as exc:  # never an exception in the user's training
                self._needs_grad_norms = False
                users = [c for c in self.checks if getattr(c, "uses_grad_norms", False)]
                self._machinery_error("computing gradient norms", exc, [(c, None) for c in users])
        for check in self._by_event.get("step_pre", ()):
            self._call(check, check.on_step_pre, ctx)
        if ctx.checked:
            self.flush()

    def _step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._own_thread() or not self._watched(optimizer):
            return
        ctx = self._contexts.pop(optimizer, None)
        if ctx is None:  # pragma: no cover - pre hook did not run
            return
        for check in self._by_event.get("step_post", ()):
            self._call(check, check.on_step_post, ctx)
        self._opt_steps[optimizer] = ctx.step + 1
        self.optimizer_steps += 1
        self.step = max(self.step, ctx.step + 1)

    def _on_backward_call(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        """``Tensor.backward``/``torch.autograd.backward`` seen through the call window: the
        ``backward`` events around the call itself. The window closes: nothing after the
        ``backward()`` call is of interest until the next forward ends."""
        window = self._window
        if window is not None:
            window.close()
        if self._backward_depth or _compiling() or not self._own_thread():
            return func(*args, **kwargs)
        tensors = args[0] if args else kwargs.get("tensors", kwargs.get("self"))
        if isinstance(tensors, torch.Tensor):
            tensors = (tensors,)
        try:
            event = BackwardEvent(tuple(t for t in (tensors or ()) if isinstance(t, torch.Tensor)))
        except Exception:  # an argument torch itself will reject: let it say so
            return func(*args, **kwargs)
        for check in self._by_event.get("backward", ()):
            self._call(check, check.on_backward, event)
        for listener in self.backward_listeners:
            try:
                listener(event)
            except Exception:  # a listener never breaks training
                pass
        self._backward_depth += 1
        try:
            result = func(*args, **kwargs)
        finally:
            self._backward_depth -= 1
        for check in self._by_event.get("backward_end", ()):
            self._call(check, check.on_backward_end, event)
        return result

    def _on_loss_call(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        """``F.cross_entropy``/``F.nll_loss`` seen through the call window."""
        if not _compiling() and args and isinstance(args[0], torch.Tensor) and self._own_thread():
            target = args[1] if len(args) > 1 else kwargs.get("target")
            extra = {k: v for k, v in kwargs.items() if k != "target"}
            self._emit_loss(args[0], target, extra, func is torch.nn.functional.nll_loss, None)
        return func(*args, **kwargs)

    def _emit_loss(self, input: torch.Tensor, target: Any, kwargs: dict, nll: bool,
                   module: torch.nn.Module | None) -> None:
        event = CallEvent(input, target, kwargs=kwargs, module=module or self.current_module())
        event.loss = "nll_loss" if nll else "cross_entropy"
        for check in self._by_event.get("cross_entropy", ()):
            self._call(check, check.on_cross_entropy, event)

    # -- findings -------------------------------------------------------------------------------
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
    ) -> Finding:
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
            path=path or "", line=line or 1,
        )

    def _add(self, *, code: str, name: str, severity: Any, subject: str, message: str,
             step: int | None, module: str | None, value: Any, path: str, line: int) -> Finding:
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
        )
        self._by_key[key] = finding
        self.findings.append(finding)
        if self.fail_fast and finding.severity is Severity.ERROR and code != INTERNAL_ERROR_CODE:
            if self._fail_pending is None:
                self._fail_pending = finding
            if not dist.active() and not self._in_flush_callbacks():
                self._fail_pending = None
                raise AuditFailure(finding)
        return finding

    def _in_flush_callbacks(self) -> bool:
        return False

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


def finding_line(f: Finding) -> str:
    """One runtime finding on one line: ``path:line:col: CODE message [module=…, step=…, …]``
    (the report's line, also what the framework integrations log)."""
    where = f"{f.path}:{f.line}:{f.column}: " if f.path else ""
    extra = [
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in f.runtime_facts()
    ]
    details = f" [{', '.join(extra)}]" if extra else ""
    return f"{where}{f.code} {f.message}{details}"


def format_text(findings: list[Finding], notes: Iterable[str] = ()) -> str:
    """The report: a line per finding (with a ``help:`` line under it when there is help), a
    summary line and the notes. A chain of non-finite findings is listed root cause first, the
    others marked as its follow-ons (``torch_audit.runtime.causes``)."""
    from torch_audit.runtime.causes import root_cause_first

    lines = []
    for f in root_cause_first(list(findings)):
        lines.append(finding_line(f))
        if f.help:
            lines.append(f"  help: {f.help}")
    n = len(findings)
    lines.append("No runtime findings." if n == 0 else f"Found {n} runtime finding{'s' if n != 1 else ''}.")
    lines.extend(f"Note: {note}." for note in notes)
    return "\n".join(lines)


def resolve_options(catalog: Any, options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """Validate per-rule options keyed by rule name or code; returns ``{code: {key: value}}``."""
    out: dict[str, dict] = {}
    for key, values in (options or {}).items():
        rule = catalog.get(str(key))
        if rule is None or rule.kind != "runtime":
            raise ValueError(f"options given for unknown runtime check {key!r}")
        if not isinstance(values, Mapping):
            raise TypeError(f"options for {key!r} must be a dict, got {type(values).__name__}")
        checked = {}
        for k, v in values.items():
            opt = rule.options.get(k)
            if opt is None:
                valid = ", ".join(sorted(rule.options)) or "none"
                raise ValueError(f"unknown option {k!r} for check {rule.name} (valid: {valid})")
            checked[k] = opt.check(rule.name, k, v)
        out.setdefault(rule.code, {}).update(checked)
    return out


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
    fail_fast: bool = False,
    preview: bool | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    sync: str = "auto",
    config: str | os.PathLike[str] | bool | None = None,
    **rule_options: Mapping[str, Any],
) -> AuditSession:
    """Audit the training code run inside the ``with`` block.

    ``model``/``optimizer`` restrict the audit to those objects (default: every module and
    optimizer used in the block). ``select``/``ignore``/``extend_select`` take codes, prefixes
    or names as the linter does; ``preview=True`` enables preview checks. ``every=N`` runs the
    numeric step checks on every N-th optimizer step. ``fail_fast=True`` raises
    :class:`~torch_audit.runtime.AuditFailure` on the first error-severity finding.
    Per-check options: ``options={"exploding-gradient": {"factor": 10}}``, or as keywords with
    underscores, ``exploding_gradient={"factor": 10}``. ``sync`` chooses when flags are read on
    CUDA: ``"late"`` (asynchronously, one step later), ``"step"`` (in the step), ``"auto"``
    (late unless ``fail_fast``).

    The settings start from ``[tool.torch-audit]`` of the nearest ``pyproject.toml`` (from the
    current directory upwards; ``config=`` a path to use that file instead, ``config=False`` to
    read none); the keyword arguments take precedence as the linter's command line does over the
    file: ``select`` starts afresh (the file's ``select``, ``ignore`` and ``extend-select`` no
    longer count), ``ignore``/``extend_select`` adjust the file's selection, ``preview``
    replaces it unless None, options override it key by key. A bad file raises
    :class:`torch_audit.config.ConfigError`.
    """
    from torch_audit.catalog import load_catalog
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
    catalog = load_catalog()
    try:
        project = settings.project_config(config, catalog)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None  # one line about the file, not the loader's frames
    chosen = settings.selection(
        project, catalog, select=_selectors(select), ignore=_selectors(ignore) or (),
        extend_select=_selectors(extend_select) or (), preview=preview,
    )
    merged = settings.runtime_options(project, catalog)
    for explicit in (options or {}, keyword_options):  # the later wins
        merged = settings.merge_options(merged, explicit, catalog)
    return AuditSession(model, optimizer, every=every, fail_fast=fail_fast, options=merged,
                        sync=sync, **chosen)
