"""``torch-audit run``: audit an unmodified training script, or profile a model.

::

    torch-audit run [OPTIONS] train.py [ARGS]...       # like `python train.py ARGS`
    torch-audit run [OPTIONS] -m package.module [ARGS]  # like `python -m package.module ARGS`
    torch-audit run [OPTIONS] model.py:build             # profile one forward/backward

The script runs as ``__main__`` inside one global audit session (:mod:`torch_audit.runtime.script`
explains what it sees). The report is written when the script ends, also when it raises, calls
``sys.exit`` or is interrupted; then the script's own exception and exit status come through:

- exit status = the script's own; when the script succeeded (or ``--max-steps`` stopped it), 1 if
  a finding at or above ``--fail-on`` was reported, else 0; 2 for usage/configuration errors;
- an uncaught exception is printed as python prints it (``sys.excepthook``) and exits 1; an
  uncaught ``KeyboardInterrupt`` ends the process with SIGINT after the normal shutdown, as python
  does.

This module imports torch; ``torch-audit lint`` never imports it (the CLI group loads ``run``
lazily).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import click
import torch

from torch_audit.findings import Finding, Severity
from torch_audit.runtime import reduce
from torch_audit.runtime import script as script_runner

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
OUTPUT_FORMATS = ("text", "full", "json", "sarif", "github")
#: formats a program parses as a whole: never mixed into the script's stdout
MACHINE_FORMATS = ("json", "sarif")
#: formats whose report starts with the "audited N steps" preface and its notes
TEXT_LIKE = ("text", "full")

__all__ = ["run", "RunOutcome", "StepMonitor", "MaxStepsReached", "audit_script", "History", "StepSeries"]


class MaxStepsReached(BaseException):
    """Raised from an optimizer step post-hook to stop the script after ``--max-steps``.

    A ``BaseException`` so that a script's ``except Exception`` does not swallow it."""


class UsageError(Exception):
    """A usage or configuration problem: one line on stderr, exit status 2."""


# ----------------------------------------------------------------------------------------------
# history for the HTML charts
# ----------------------------------------------------------------------------------------------


def layer_of(param_name: str) -> str:
    """``encoder.0.weight`` → ``encoder.0``; names without a dot stay as they are."""
    base = param_name.split(" ", 1)[0]
    return base.rsplit(".", 1)[0] if "." in base else base


def _rank(value: float) -> float:
    """The order in which decimation keeps extremes: NaN counts as the highest value (the
    charts show non-finite values as red marks on the top edge; they must survive)."""
    return math.inf if value != value else value


def _higher(a: float, b: float) -> float:
    return b if _rank(b) > _rank(a) else a


Point = tuple[int, float]


def _envelope(a: tuple[Point, Point], b: tuple[Point, Point]) -> tuple[Point, Point]:
    """The lowest and the highest of two buckets' (lowest, highest) points."""
    lo = b[0] if _rank(b[0][1]) < _rank(a[0][1]) else a[0]
    hi = b[1] if _rank(b[1][1]) > _rank(a[1][1]) else a[1]
    return lo, hi


def _put(buckets: dict[int, Any], key: int, item: Any, merge: Callable[[Any, Any], Any]) -> None:
    buckets[key] = merge(buckets[key], item) if key in buckets else item


def _rebucket(buckets: dict[int, Any], stride: int, merge: Callable[[Any, Any], Any]) -> dict[int, Any]:
    """Merge buckets keyed by their first step into buckets of ``stride`` steps."""
    out: dict[int, Any] = {}
    for start, item in buckets.items():
        _put(out, start - start % stride, item, merge)
    return out


class StepSeries:
    """One line of a chart, ``(step, value)`` points, bounded in memory however long the run.

    Steps are grouped in buckets of ``stride`` steps (1 at first) and each bucket keeps its
    lowest and its highest point with their real steps, so a spike or a NaN survives
    decimation and the line passes through what really happened. When there are more than
    ``max_buckets`` buckets, the stride doubles and neighbouring buckets merge. Iterating gives
    the points in step order."""

    def __init__(self, max_buckets: int = 256) -> None:
        self.max_buckets = max_buckets
        self.stride = 1
        self._buckets: dict[int, tuple[Point, Point]] = {}

    def add(self, step: int, value: float) -> None:
        point = (step, value)
        _put(self._buckets, step - step % self.stride, (point, point), _envelope)
        if len(self._buckets) > self.max_buckets:
            self.stride *= 2
            self._buckets = _rebucket(self._buckets, self.stride, _envelope)

    def __iter__(self) -> Iterator[Point]:
        for lo, hi in self._buckets.values():
            if lo is hi:
                yield lo
            else:
                yield from sorted((lo, hi), key=lambda point: point[0])

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def __repr__(self) -> str:
        return f"StepSeries({list(self)!r})"


@dataclasses.dataclass
class History:
    """What the HTML report charts: the loss and the global gradient norm per optimizer step,
    and per-layer gradient norms. All of it is decimated (see :class:`StepSeries`), so a run of
    a million steps records no more than one of a thousand."""

    #: ``(step, loss)`` points of the first optimizer seen (the loss of the last backward before it)
    loss: StepSeries = dataclasses.field(default_factory=StepSeries)
    #: optimizer label → ``(step, global L2 gradient norm)`` points
    grad_norm: dict[str, StepSeries] = dataclasses.field(default_factory=dict)
    #: layer name (in first-seen order) → ``{first step of a bucket: L2 gradient norm of the
    #: layer}``, the highest norm of the ``layer_stride`` steps of the bucket (non-finite wins,
    #: as in the heatmap's columns); at most ``max_columns`` buckets
    layer_norms: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)
    layer_stride: int = 1
    max_columns: int = 512
    #: step of the first optimizer → how many iterations a GradScaler skipped just before it
    #: (their scaled gradients overflowed; the optimizer did not step)
    skipped: dict[int, int] = dataclasses.field(default_factory=dict)
    max_skip_marks: int = 256
    #: the last scale seen by the first optimizer's steps (and the scaler's backoff factor)
    _last_scale: float | None = dataclasses.field(default=None, repr=False, compare=False)
    _columns: set[int] = dataclasses.field(default_factory=set, init=False, repr=False, compare=False)

    def add_step(self, label: str, step: int, grad_norm: float, loss: float | None) -> None:
        if loss is not None:
            self.loss.add(step, loss)
        self.grad_norm.setdefault(label, StepSeries()).add(step, grad_norm)

    def add_layers(self, step: int, norms: dict[str, float]) -> None:
        key = step - step % self.layer_stride
        for layer, value in norms.items():
            _put(self.layer_norms.setdefault(layer, {}), key, value, _higher)
        self._columns.add(key)
        if len(self._columns) > self.max_columns:
            self.layer_stride *= 2
            self.layer_norms = {
                layer: _rebucket(row, self.layer_stride, _higher) for layer, row in self.layer_norms.items()
            }
            self._columns = {k - k % self.layer_stride for k in self._columns}

    def add_scale(self, step: int, scale: float, init_scale: float, backoff: float) -> None:
        """The GradScaler's scale at a step of the first optimizer: the scale halves (by
        ``backoff``) once per skipped iteration and grows only after many good steps, so a
        drop from the last step's scale (or the initial scale) counts the skips in between."""
        before = self._last_scale if self._last_scale is not None else init_scale
        self._last_scale = scale
        if not (0 < backoff < 1) or not (scale > 0) or not (before > scale):
            return
        skips = round(math.log(before / scale) / math.log(1 / backoff))
        if skips <= 0:
            return
        if step not in self.skipped and len(self.skipped) >= self.max_skip_marks:
            step = max(self.skipped)  # bounded: later skips join the last mark
        self.skipped[step] = self.skipped.get(step, 0) + skips

    @property
    def empty(self) -> bool:
        return not self.loss and not self.grad_norm and not self.layer_norms


def _grad_scaler_stepping() -> Any:
    """The ``torch.amp.GradScaler`` whose ``step()`` is calling the optimizer's ``step()`` now, if
    any: a few frames up the stack (its ``_maybe_opt_step``), no patch of the scaler."""
    try:
        scaler_type = torch.amp.GradScaler
    except AttributeError:  # pragma: no cover - old torch
        return None
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return None
        owner = frame.f_locals.get("self") if frame.f_code.co_name in ("_maybe_opt_step", "step") else None
        if isinstance(owner, scaler_type):
            if owner.is_enabled() and getattr(owner, "_scale", None) is not None:
                return owner
            return None
        frame = frame.f_back
    return None


class StepMonitor:
    """torch-audit run's own light hooks, installed next to the session's (and removed before
    it exits): counts optimizer steps for ``--max-steps``, draws the progress line, and records
    the :class:`History` for ``--html``.

    Device values are read in batches (every ``read_every`` steps, or at the end), never one
    host synchronisation per step; the progress line reads the last loss at most a few times a
    second, and only when it is shown."""

    def __init__(
        self,
        session: Any,
        *,
        max_steps: int | None = None,
        progress: TextIO | None = None,
        history: bool = False,
        read_every: int = 32,
        progress_interval: float = 0.2,
    ) -> None:
        self.session = session
        self.max_steps = max_steps
        self.progress = progress
        self.history = History() if history else None
        self.read_every = read_every
        self.progress_interval = progress_interval
        self.steps = 0  # optimizer.step() calls seen, over all optimizers
        #: optimizer label → its step() calls, in first-seen order (plain strings: the counts
        #: outlive optimizers built inside a function)
        self.steps_by_optimizer: dict[str, int] = {}
        self.stopped = False
        self._counts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._labels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._primary: weakref.ref | None = None
        self._last_loss: torch.Tensor | None = None
        self._pending: list[tuple[str, int, torch.Tensor, torch.Tensor | None, list[str],
                                  torch.Tensor | None]] = []
        self._scaler_factors: tuple[float, float] = (0.0, 0.5)
        self._handles: list[Any] = []
        self._last_draw = 0.0
        self._drawn = False
        #: the script's last write to the terminal did not end its line (its own progress bar,
        #: tqdm's ``\r`` updates): no status line until it does
        self._script_midline = False

    # -- install / remove ---------------------------------------------------------------------
    def install(self) -> "StepMonitor":
        from torch.optim import optimizer as optim_module

        if self.history is not None:
            self._handles.append(optim_module.register_optimizer_step_pre_hook(self._step_pre))
        self._handles.append(optim_module.register_optimizer_step_post_hook(self._step_post))
        return self

    def listen(self) -> "StepMonitor":
        """Before the session starts: have it hand over each ``backward()`` call (the loss for
        the progress line and the charts; nothing of torch is replaced)."""
        if self.history is not None or self.progress is not None:
            listeners = getattr(self.session, "backward_listeners", None)
            if listeners is not None:
                listeners.append(self._on_backward)
        return self

    def _on_backward(self, event: Any) -> None:
        tensors = event.tensors
        if len(tensors) == 1:
            t = tensors[0]
            if t.numel() == 1 and t.is_floating_point():
                self._last_loss = t.detach()

    def remove(self) -> None:
        for handle in reversed(self._handles):
            handle.remove()
        self._handles = []
        try:
            self._read_pending()
        except Exception:  # a chart is never worth a crash
            self._pending = []
        self._last_loss = None
        self.clear_progress()

    def __enter__(self) -> "StepMonitor":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    # -- hooks --------------------------------------------------------------------------------
    def _label(self, optimizer: torch.optim.Optimizer) -> str:
        label = self._labels.get(optimizer)
        if label is None:
            try:
                label = self.session.optimizer_label(optimizer)
            except Exception:
                label = type(optimizer).__name__
            self._labels[optimizer] = label
        return label

    def _step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        try:
            self._record(optimizer)
        except Exception:  # never break training for a chart
            pass

    def _record(self, optimizer: torch.optim.Optimizer) -> None:
        if torch.compiler.is_compiling():
            return
        step = self._counts.get(optimizer, 0)
        # Reuse the session's fused per-parameter norms when it exposes this step's context.
        ctx = None
        contexts = getattr(self.session, "_contexts", None)
        if contexts is not None:
            try:
                ctx = contexts.get(optimizer)
            except Exception:
                ctx = None
        if ctx is not None:
            params = ctx.params
            norms = ctx.grad_norms()
        else:
            params = list(dict.fromkeys(p for g in optimizer.param_groups for p in g["params"]))
            grads = [p.grad for p in params if p.grad is not None]
            if not grads:
                return
            got = iter(reduce.norms([g.detach() for g in grads]))
            zero = torch.zeros((), device=grads[0].device)
            norms = torch.stack([next(got).float() if p.grad is not None else zero for p in params])
        names = self._names.get(optimizer)
        if names is None or len(names) != len(params):
            names = []
            for i, p in enumerate(params):
                try:
                    names.append(ctx.name(p, i) if ctx is not None else self.session.index.param_name(p, f"params[{i}]"))
                except Exception:
                    names.append(f"{self._label(optimizer)}.params[{i}]")
            self._names[optimizer] = names
        loss = None
        scale = None
        if self._primary is None:
            self._primary = weakref.ref(optimizer)
        if self._primary() is optimizer:
            scaler = _grad_scaler_stepping()
            if scaler is not None:
                # snapshot: update() changes the scale in place after this step
                scale = scaler._scale.detach().float().reshape(1).clone()
                self._scaler_factors = (float(scaler._init_scale), float(scaler._backoff_factor))
            if self._last_loss is not None:
                loss = self._last_loss.float().reshape(1)
                if scale is not None:  # backward() ran on scaler.scale(loss): chart the loss
                    loss = loss / scale.to(loss.device)
        self._pending.append((self._label(optimizer), step, norms.detach().float().reshape(-1), loss, names,
                              scale))
        if len(self._pending) >= self.read_every:
            self._read_pending()

    def _read_pending(self) -> None:
        if not self._pending or self.history is None:
            self._pending = []
            return
        batch, self._pending = self._pending, []
        parts = []
        for _label, _step, norms, loss, _names, scale in batch:
            parts.append(norms.to("cpu", torch.float64) if norms.device.type != "cpu" else norms.double())
            for extra in (loss, scale):
                if extra is not None:
                    parts.append(extra.to("cpu", torch.float64) if extra.device.type != "cpu" else extra.double())
        flat = torch.cat(parts).tolist() if parts else []
        offset = 0
        hist = self.history
        for label, step, norms, loss, names, scale in batch:
            values = flat[offset:offset + norms.numel()]
            offset += norms.numel()
            loss_value = None
            if loss is not None:
                loss_value = flat[offset]
                offset += 1
            if scale is not None:
                hist.add_scale(step, flat[offset], *self._scaler_factors)
                offset += 1
            total = math.sqrt(sum(v * v for v in values)) if values else 0.0
            hist.add_step(label, step, total, loss_value)
            layers: dict[str, float] = {}
            for name, v in zip(names, values):
                layer = layer_of(name)
                layers[layer] = layers.get(layer, 0.0) + v * v
            hist.add_layers(step, {k: math.sqrt(v) for k, v in layers.items()})

    def _step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._counts[optimizer] = self._counts.get(optimizer, 0) + 1
        self.steps += 1
        label = self._label(optimizer)
        self.steps_by_optimizer[label] = self.steps_by_optimizer.get(label, 0) + 1
        if self.progress is not None:
            now = time.monotonic()
            if now - self._last_draw >= self.progress_interval:
                self._last_draw = now
                self.draw_progress()
        if self.max_steps is not None and not self.stopped:
            if min(self._counts.values()) >= self.max_steps:
                self.stopped = True
                raise MaxStepsReached(self.max_steps)

    # -- progress line --------------------------------------------------------------------------
    def status_text(self) -> str:
        parts = [f"step {max(self._counts.values(), default=0)}"]
        if self._last_loss is not None:
            try:
                parts.append(f"loss {float(self._last_loss.float()):.4g}")
            except Exception:
                pass
        n = len(getattr(self.session, "findings", ()))
        parts.append(f"{n} finding{'s' if n != 1 else ''}")
        return "torch-audit: " + " · ".join(parts)

    def draw_progress(self) -> None:
        if self.progress is None or self._script_midline:
            return
        try:
            self.progress.write("\r\x1b[2K" + self.status_text())
            self.progress.flush()
            self._drawn = True
        except Exception:
            self.progress = None

    def before_script_write(self, text: str) -> None:
        """The script is about to write ``text`` to the terminal: take the status line away
        first, so that its line starts in the first column (the next step draws it again)."""
        if not text:
            return
        if self._drawn:
            self.clear_progress()
        self._script_midline = not text.endswith("\n")

    def clear_progress(self) -> None:
        if self.progress is not None and self._drawn:
            try:
                self.progress.write("\r\x1b[2K")
                self.progress.flush()
            except Exception:
                pass
            self._drawn = False


class _ClearsStatusLine:
    """``sys.stdout``/``sys.stderr`` while the status line is drawn on a terminal: the script's
    writes go to the real stream, each after :meth:`StepMonitor.before_script_write` cleared
    the status line (a status line has no newline; without this, the script's next line would
    be glued to its end). Everything else is the real stream's (``fileno``, ``isatty``,
    ``encoding``, ``buffer``...)."""

    def __init__(self, stream: TextIO, monitor: StepMonitor) -> None:
        self._stream = stream
        self._monitor = monitor

    def write(self, text: str) -> int:
        try:
            self._monitor.before_script_write(text)
        except Exception:  # the status line is never worth a failed print
            pass
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _status_line_aware_streams(monitor: StepMonitor) -> Iterator[None]:
    """While the status line is shown, the script's terminal streams clear it before writing;
    streams that are not terminals (files, pipes) are left alone."""
    swapped: list[tuple[str, TextIO, _ClearsStatusLine]] = []
    if monitor.progress is not None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            try:
                tty = stream is not None and stream.isatty()
            except Exception:
                tty = False
            if tty:
                proxy = _ClearsStatusLine(stream, monitor)
                setattr(sys, name, proxy)
                swapped.append((name, stream, proxy))
    try:
        yield
    finally:
        for name, stream, proxy in swapped:
            if getattr(sys, name) is proxy:  # unless the script installed its own
                setattr(sys, name, stream)


# ----------------------------------------------------------------------------------------------
# running a script
# ----------------------------------------------------------------------------------------------


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


def audit_script(
    target: str,
    args: list[str] | tuple[str, ...] = (),
    *,
    module: bool = False,
    audit_options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    progress: TextIO | None = None,
    history: bool = False,
) -> RunOutcome:
    """Run ``target`` (a script path, or a module name with ``module=True``) as ``__main__``
    inside one audit session; never raises for what the script does (its exception, exit or
    interrupt is in the returned :class:`RunOutcome`). ``audit_options`` are the keyword arguments
    of :func:`torch_audit.audit`. Raises :class:`script_runner.ScriptNotFound`."""
    from torch_audit.runtime.errors import AuditFailure
    from torch_audit.runtime.session import audit

    session = audit(**(audit_options or {}))
    session.started_by = "`torch-audit run`"
    outcome = RunOutcome(findings=[])
    monitor = StepMonitor(session, max_steps=max_steps, progress=progress, history=history).listen()
    try:
        with session:
            with monitor, _status_line_aware_streams(monitor):
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
    from torch_audit.runtime.causes import root_cause_first

    if session.in_forked_child:  # only the process that opened the session reports (issue 18)
        if outcome.exception is not None:
            script_runner.report_exception(outcome.exception)
        raise SystemExit(outcome.status)
    outcome.findings = root_cause_first(list(session.findings))
    outcome.steps = monitor.steps
    outcome.optimizer_steps = dict(monitor.steps_by_optimizer)
    outcome.history = monitor.history
    outcome.rank = getattr(session, "rank", None)
    outcome.notes = list(session.notes)
    return outcome


def fails(findings: list[Finding], fail_on: str) -> bool:
    threshold = Severity.parse(fail_on).rank
    return any(f.severity.rank >= threshold for f in findings)


def final_status(outcome: RunOutcome, *, fail_on: str, exit_zero: bool) -> int:
    """The script's own status, or 1 for findings at or above ``fail_on`` when it succeeded."""
    if outcome.status != 0:
        return outcome.status
    if not exit_zero and fails(outcome.findings, fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# options and configuration
# ----------------------------------------------------------------------------------------------


def _split(values: tuple[str, ...] | list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def parse_option_value(text: str) -> Any:
    """``20`` → 20, ``1e-3`` → 0.001, ``true`` → True, ``"x"`` or ``x`` → "x" (TOML values)."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_option_flags(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--option exploding-gradient.factor=20`` → ``{"exploding-gradient": {"factor": 20}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        m = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", item)
        if not m:
            raise UsageError(
                f"--option expects RULE.KEY=VALUE (e.g. exploding-gradient.factor=20), got {item!r}"
            )
        rule, key, value = m.group(1), m.group(2), m.group(3).strip()
        out.setdefault(rule, {})[key] = parse_option_value(value)
    return out


@dataclasses.dataclass
class Settings:
    audit_options: dict[str, Any]
    fail_on: str
    config_path: Path | None
    root: Path


def resolve_settings(opts: dict[str, Any], start: Path) -> Settings:
    """Merge ``[tool.torch-audit]`` with the command line (the command line wins)."""
    from torch_audit.catalog import CatalogError, UnknownSelector, load_catalog
    from torch_audit.config import ConfigError, find_config, load_config
    from torch_audit.runtime.settings import runtime_options, selection

    try:
        catalog = load_catalog()
    except CatalogError as exc:
        raise UsageError(f"broken rule catalogue: {exc}") from None
    config_file = opts.get("config_file")
    try:
        path = config_file if config_file is not None else find_config(start)
        config = load_config(path, catalog)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        chosen = selection(
            config, catalog, select=_split(opts.get("select")) or None,
            ignore=_split(opts.get("ignore")), extend_select=_split(opts.get("extend_select")),
            preview=opts.get("preview"),
        )
    except UnknownSelector as exc:
        raise UsageError(str(exc)) from None
    options = runtime_options(config, catalog)
    for name, values in parse_option_flags(tuple(opts.get("option") or ())).items():
        rule = catalog.get(name)
        if rule is None:
            raise UsageError(f"--option: unknown rule {name!r} (see `torch-audit rules --kind runtime`)")
        options.setdefault(rule.name, {}).update(values)
    for name, values in options.items():
        rule = catalog[name]
        if rule.kind != "runtime":
            raise UsageError(f"--option: {rule.name} is a static rule; run takes options of runtime checks")
        for key, value in values.items():
            option = rule.options.get(key)
            if option is None:
                valid = ", ".join(sorted(rule.options)) or "none"
                raise UsageError(f"--option: unknown option {key!r} for {rule.name} (valid: {valid})")
            try:
                values[key] = option.check(rule.name, key, value)
            except TypeError as exc:
                raise UsageError(f"--option: {exc}") from None
    fail_on = opts.get("fail_on") or config.fail_on
    audit_options = {
        **chosen,  # resolved above: the checks by code, TA799's ignore, preview applied
        "every": opts.get("every") or 1,
        "fail_fast": bool(opts.get("fail_fast")),
        "options": options,
        "config": False,  # resolved above, from the script's directory upwards
    }
    return Settings(audit_options, fail_on, path, config.root if path else Path.cwd())


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------


def _color(stream: TextIO) -> bool:
    from torch_audit.report import color_wanted  # the linter's rule: NO_COLOR, FORCE_COLOR, a terminal

    return color_wanted(stream)


def _write_file(path: str, text: str) -> None:
    from torch_audit.atomic import write_text_atomic

    try:
        write_text_atomic(Path(path), text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def emit_report(
    findings: list[Finding],
    *,
    fmt: str,
    output_file: str | None,
    root: Path,
    preface: str = "",
    unchecked: bool = False,
) -> None:
    """Text goes to stderr (stdout belongs to the script), github annotations to stdout, or any
    format to ``--output-file`` (written atomically; ``-`` is stdout, after the script's own
    output)."""
    from torch_audit.catalog import load_catalog
    from torch_audit.report import TEXT_FORMATS, render

    if fmt in TEXT_FORMATS:
        stream = sys.stderr
        color = output_file is None and _color(stream)
        if unchecked and not findings:  # not "All checks passed!": the notes say what did not run
            text = "No findings, but the checks at optimizer.step() did not run (see the notes above).\n"
        else:
            text = render(findings, fmt, color=color, show_fix_hint=False)
        if preface:
            text = preface + "\n" + text
    else:
        stream = sys.stdout
        text = render(findings, fmt, catalog=load_catalog(), root=root)
    if output_file == "-":
        stream = sys.stdout
    elif output_file is not None:
        _write_file(output_file, text)
        return
    stream.write(text)
    stream.flush()


def describe_steps(outcome: RunOutcome) -> str:
    """``3 optimizer steps``; with several optimizers the steps of each, not their sum (a GAN
    stopped by ``--max-steps 4`` ran "4 steps of 2 optimizers", not 8 optimizer steps)."""
    counts = outcome.optimizer_steps
    if len(counts) <= 1:
        steps = outcome.steps
        return f"{steps} optimizer step{'s' if steps != 1 else ''}"
    if len(set(counts.values())) == 1:
        steps = next(iter(counts.values()))
        return f"{steps} step{'s' if steps != 1 else ''} of {len(counts)} optimizers"
    each = ", ".join(f"{label}: {n} step{'s' if n != 1 else ''}" for label, n in counts.items())
    return f"{len(counts)} optimizers ({each})"


def not_checked(outcome: RunOutcome, max_steps: int | None = None) -> list[str]:
    """What did not run, so that a report never says "All checks passed!" after nothing was
    checked: the checks at ``optimizer.step()`` need a ``torch.optim`` optimizer to step, and
    ``--max-steps`` counts those steps."""
    if outcome.steps:
        return []
    out = []
    if outcome.exception is not None:
        out.append(f"the script raised {type(outcome.exception).__name__} before the first "
                   "optimizer step: the checks at optimizer.step() did not run")
    elif outcome.interrupted is None and outcome.audit_failure is None:
        out.append("no torch.optim optimizer stepped: the checks at optimizer.step() (gradients, "
                   "parameters, updates, unused and frozen parameters) did not run; a "
                   "hand-written update (p -= lr * p.grad) is not an optimizer step")
    if max_steps is not None and not outcome.stopped_at_max_steps:
        out.append(f"--max-steps {max_steps} never fired: it counts torch.optim optimizer steps")
    return out


def _preface(target: str, outcome: RunOutcome, max_steps: int | None = None) -> str:
    what = describe_steps(outcome)
    how = ""
    if outcome.stopped_at_max_steps:
        how = " (stopped by --max-steps)"
    elif outcome.interrupted is not None:
        how = " (interrupted)"
    elif outcome.exception is not None:
        how = f" (the script raised {type(outcome.exception).__name__})"
    elif outcome.audit_failure is not None:
        how = " (stopped by --fail-fast)"
    elif outcome.system_exit is not None and outcome.status != 0:
        how = f" (the script exited with status {outcome.status})"
    from torch_audit.runtime.causes import root_cause_notes

    notes = "".join(f"\ntorch-audit: note: {note}."
                    for note in [*outcome.notes, *root_cause_notes(outcome.findings),
                                 *not_checked(outcome, max_steps)])
    return f"torch-audit: audited {what} of {target}{how}.{notes}"


_sigint_on_exit = False


def _exit_with_sigint() -> None:
    """Registered before the script runs, so it runs after the script's own ``atexit``
    handlers: end with SIGINT as python does after an uncaught KeyboardInterrupt."""
    if not _sigint_on_exit:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except Exception:  # pragma: no cover - platforms without kill()
        pass


_registered = False


def _register_sigint_exit() -> None:
    global _registered
    if not _registered:
        import atexit

        atexit.register(_exit_with_sigint)
        _registered = True


# ----------------------------------------------------------------------------------------------
# the click command
# ----------------------------------------------------------------------------------------------

_PROFILE_TARGET = re.compile(r"(?P<where>.+?):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def profile_target(target: str) -> tuple[str, str] | None:
    """``model.py:build`` or ``package.module:build`` → (where, attribute), else None."""
    if os.path.exists(target):
        return None
    m = _PROFILE_TARGET.fullmatch(target)
    if not m:
        return None
    where = m.group("where")
    if where.endswith(".py") or os.path.exists(where) or re.fullmatch(r"[A-Za-z_][\w.]*", where):
        return where, m.group("attr")
    return None


@click.command(
    "run",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["-h", "--help"],
    },
)
@click.argument("target", metavar="SCRIPT|-m MODULE|FILE.py:FUNCTION")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-m", "as_module", is_flag=True, help="Run the library module TARGET as a script, like `python -m`.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this pyproject.toml or torch-audit.toml instead of searching for one.")
@click.option("--select", multiple=True, help="Runtime checks to enable: codes, prefixes (TA7), names or ALL.")
@click.option("--ignore", multiple=True, help="Runtime checks to disable (same forms as --select).")
@click.option("--extend-select", multiple=True, help="Checks to enable in addition to the selection.")
@click.option("--preview/--no-preview", default=None, help="Enable preview checks.")
@click.option("--option", "option", multiple=True, metavar="RULE.KEY=VALUE",
              help="Set a check's option (a TOML value), e.g. exploding-gradient.factor=20. Repeatable.")
@click.option("--every", type=click.IntRange(min=1), default=None, help="Run the numeric step checks every N-th optimizer step.")
@click.option("--fail-fast", is_flag=True, help="Stop the script at the first error-severity finding.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop the script cleanly after N optimizer steps and report (a CI smoke test).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default=None,
              help="Exit 1 for findings at or above this severity when the script succeeded [default: error].")
@click.option("--exit-zero", is_flag=True, help="Exit with the script's status even when there are findings.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default="text", show_default=True,
              help="text/full go to stderr, github to stdout; json and sarif need -o.")
@click.option("-o", "--output-file", type=click.Path(dir_okay=False, path_type=str), help="Write the report to this file (- for stdout, after the script's output).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=str),
              help="Also write a self-contained HTML report with charts.")
@click.option("--progress/--no-progress", default=None, help="A status line on stderr [default: when stderr is a terminal].")
@click.option("--input-shape", multiple=True, metavar="N,C,H,W[:DTYPE]",
              help="FILE.py:FUNCTION: the shape of an input (repeat for several inputs).")
@click.option("--dtype", default="float32", show_default=True, help="FILE.py:FUNCTION: dtype of --input-shape inputs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="FILE.py:FUNCTION: where to run the model.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="FILE.py:FUNCTION: measured passes after a warm-up; times are their medians.")
@click.pass_context
def run(ctx: click.Context, target: str, args: tuple[str, ...], as_module: bool, **opts: Any) -> None:
    """Audit a training script (or profile a model) at run time.

    \b
    torch-audit run train.py --epochs 1        runs `python train.py --epochs 1`, audited
    torch-audit run -m trainer.main ARGS       runs `python -m trainer.main ARGS`, audited
    torch-audit run --max-steps 20 train.py    stops after 20 optimizer steps (CI smoke test)
    torch-audit run model.py:build --input-shape 8,3,32,32
                                               profiles one forward and backward pass

    The script's exit status comes through; when it succeeded, the status is 1 if a finding
    at or above --fail-on was reported. Options go before TARGET; everything after it is the
    script's.
    """
    if target.startswith("-") and target != "-":
        raise click.UsageError(f"no such option: {target}")
    if args and not as_module and profile_target(target) is not None:
        # A profile target takes no script arguments: options may follow it.
        opts, args = _reparse_trailing(ctx, opts, args, target)
    try:
        code = _run(target, list(args), as_module, opts)
    except UsageError as exc:
        click.echo(f"torch-audit: error: {exc}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


def _reparse_trailing(ctx: click.Context, opts: dict[str, Any], args: tuple[str, ...],
                      target: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    assert ctx.command is not None
    sub = ctx.command.make_context(ctx.info_name or "run", [*args, target], parent=ctx.parent)
    merged = dict(opts)
    for key, value in sub.params.items():
        if key in merged and sub.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT:
            if isinstance(value, tuple) and isinstance(merged.get(key), tuple):
                merged[key] = merged[key] + value
            else:
                merged[key] = value
    if sub.params.get("target") != target or sub.params.get("args"):
        raise click.UsageError(f"unexpected arguments after {target}: {' '.join(args)}")
    return merged, ()


def _resolve_output_paths(opts: dict[str, Any]) -> dict[str, Any]:
    """``-o`` and ``--html`` made absolute now: the script may ``chdir`` (into its run folder,
    say), and the files belong where the user started torch-audit."""
    out = dict(opts)
    for key in ("output_file", "html_file"):
        if out.get(key) and not (key == "output_file" and out[key] == "-"):
            out[key] = os.path.abspath(out[key])
    return out


def _run(target: str, args: list[str], as_module: bool, opts: dict[str, Any]) -> int:
    global _sigint_on_exit

    opts = _resolve_output_paths(opts)
    pt = None if as_module else profile_target(target)
    if pt is not None:
        from torch_audit.runtime.profile import run_profile_command

        start = Path(pt[0]) if os.path.exists(pt[0]) else Path.cwd()
        settings = resolve_settings(opts, start)
        return run_profile_command(pt[0], pt[1], args, settings=settings, opts=opts)

    if as_module:
        start = Path.cwd()
    else:
        if not os.path.exists(target):
            raise UsageError(f"can't open file {os.path.abspath(target)!r}: no such file")
        start = Path(target)
    settings = resolve_settings(opts, start)
    fmt = opts.get("output_format") or "text"
    if fmt in MACHINE_FORMATS and not opts.get("output_file"):
        raise UsageError(
            f"--output-format {fmt} needs -o FILE: stdout belongs to the script, and a report "
            f"mixed into its output could not be parsed (-o - writes it to stdout after the "
            f"script's output, for scripts that print nothing)"
        )
    show_progress = opts.get("progress")
    if show_progress is None:
        try:
            show_progress = sys.stderr.isatty()
        except Exception:
            show_progress = False

    _register_sigint_exit()
    try:
        outcome = audit_script(
            target,
            args,
            module=as_module,
            audit_options=settings.audit_options,
            max_steps=opts.get("max_steps"),
            progress=sys.stderr if show_progress else None,
            history=bool(opts.get("html_file")),
        )
    except script_runner.ScriptNotFound as exc:
        raise UsageError(str(exc)) from None

    if outcome.rank in (None, 0):
        unchecked = not_checked(outcome, opts.get("max_steps"))
        emit_report(
            outcome.findings,
            fmt=fmt,
            output_file=opts.get("output_file"),
            root=settings.root,
            preface=_preface(target if not as_module else f"-m {target}", outcome, opts.get("max_steps")),
            unchecked=bool(unchecked),
        )
        if unchecked and fmt not in TEXT_LIKE:  # the text preface carries them otherwise
            for note in unchecked:
                click.echo(f"torch-audit: note: {note}.", err=True)
        if opts.get("html_file"):
            from torch_audit.report.html import render_html

            title = f"torch-audit run {target}"
            _write_file(opts["html_file"], render_html(outcome.findings, history=outcome.history,
                                                       title=title, root=settings.root,
                                                       meta=_html_meta(target, args, outcome,
                                                                      opts.get("max_steps"))))
    status = final_status(outcome, fail_on=settings.fail_on, exit_zero=bool(opts.get("exit_zero")))

    if outcome.exception is not None:
        script_runner.report_exception(outcome.exception)
    elif outcome.audit_failure is not None:
        click.echo(f"torch-audit: stopped at the first error (--fail-fast): {outcome.audit_failure}", err=True)
    elif outcome.interrupted is not None:
        script_runner.report_exception(outcome.interrupted)
        _sigint_on_exit = True
    elif outcome.system_exit is not None:
        script_runner.print_exit_message(outcome.system_exit)
    return status


def _html_meta(target: str, args: list[str], outcome: RunOutcome,
               max_steps: int | None = None) -> dict[str, str]:
    ended = "finished"
    if outcome.stopped_at_max_steps:
        ended = "stopped by --max-steps"
    elif outcome.interrupted is not None:
        ended = "interrupted"
    elif outcome.exception is not None:
        ended = f"raised {type(outcome.exception).__name__}"
    elif outcome.status:
        ended = f"exited with status {outcome.status}"
    meta = {
        "command": " ".join(["torch-audit run", target, *args]),
        "audited": describe_steps(outcome),
        "script": ended,
        "torch": torch.__version__,
    }
    for n, note in enumerate(not_checked(outcome, max_steps), 1):
        meta[f"not checked ({n})" if n > 1 else "not checked"] = note
    return meta
