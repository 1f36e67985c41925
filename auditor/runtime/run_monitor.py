"""``torch-audit run``'s own subscriber: counts optimizer steps (``--max-steps``), draws the
progress line and records the charts' :class:`~torch_audit.runtime.run_history.History`
(``--html``). It is a subscriber of the session like any check (``docs/runtime.md``, "The
subscriber API"): no hook of its own, no private state of the session. The charts' device
values (the step's gradient norms, shared with the checks, the loss and a GradScaler's scale)
are deferred to the session's one read per step.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import weakref
from typing import Any, Iterator, TextIO

import torch

from torch_audit.runtime.run_history import History, layer_of
from torch_audit.runtime.subscribers import Subscriber

__all__ = ["MaxStepsReached", "RunMonitor", "status_line_aware_streams"]


class MaxStepsReached(BaseException):
    """Raised from the optimizer step's post-hook to stop the script after ``--max-steps``.

    A ``BaseException`` so that a script's ``except Exception`` does not swallow it (and the
    session passes it through: it disables a subscriber only for an ``Exception``)."""


def grad_scaler_stepping() -> Any:
    """The ``torch.amp.GradScaler`` whose ``step()`` is calling the optimizer's ``step()`` now, if
    any: a few frames up the stack (its ``_maybe_opt_step``), no patch of the scaler."""
    try:
        scaler_type = torch.amp.GradScaler
    except AttributeError:  # pragma: no cover - old torch
        return None
    frame = sys._getframe(2)
    for _ in range(12):  # the session's hooks and dispatch, torch's step wrapper, then the scaler
        if frame is None:
            return None
        owner = frame.f_locals.get("self") if frame.f_code.co_name in ("_maybe_opt_step", "step") else None
        if isinstance(owner, scaler_type):
            if owner.is_enabled() and getattr(owner, "_scale", None) is not None:
                return owner
            return None
        frame = frame.f_back
    return None


class RunMonitor(Subscriber):
    """Step counts, ``--max-steps``, the progress line and the chart history of one run."""

    #: every step is counted, audited or not; the charts hold the audited steps' values
    light_step_post = True

    def needs_every_pass(self) -> bool:
        return False

    def __init__(self, session: Any, *, max_steps: int | None = None,
                 progress: TextIO | None = None, history: bool = False,
                 progress_interval: float = 0.2) -> None:
        self.session = session
        self.max_steps = max_steps
        self.progress = progress
        self.history = History() if history else None
        self.progress_interval = progress_interval
        wanted = {"step_post"}
        if self.history is not None:
            wanted.add("step_pre")
        if self.history is not None or self.progress is not None:
            wanted.add("backward")  # the loss, for the progress line and the chart
        self.events = frozenset(wanted)  # type: ignore[misc]
        self.steps = 0  # optimizer.step() calls seen, over all optimizers
        #: optimizer label → its step() calls, in first-seen order (plain strings: the counts
        #: outlive optimizers built inside a function)
        self.steps_by_optimizer: dict[str, int] = {}
        self.stopped = False
        self._counts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._primary: weakref.ref | None = None
        self._last_loss: torch.Tensor | None = None
        self._scaler_factors: tuple[float, float] = (0.0, 0.5)
        self._last_draw = 0.0
        self._drawn = False
        #: the script's last write to the terminal did not end its line (its own progress bar,
        #: tqdm's ``\r`` updates): no status line until it does
        self._script_midline = False

    # -- events -------------------------------------------------------------------------------
    def on_backward(self, event: Any) -> None:
        loss = event.loss
        if loss is not None:
            self._last_loss = loss

    def on_step_pre(self, ctx: Any) -> None:
        try:
            self._defer_chart_values(ctx)
        except Exception:  # a chart is never worth a crash, nor the step count after it
            pass

    def _defer_chart_values(self, ctx: Any) -> None:
        """Defer this step's chart values (the norms the checks share, the loss, the scale)."""
        if not any(ctx.has_grad):
            return
        norms = ctx.grad_norms().detach().float().reshape(-1)
        names = self._param_names(ctx)
        loss = scale = None
        if self._primary is None:
            self._primary = weakref.ref(ctx.optimizer)
        if self._primary() is ctx.optimizer:
            scaler = grad_scaler_stepping()
            if scaler is not None:
                # snapshot: update() changes the scale in place after this step
                scale = scaler._scale.detach().float().reshape(1).clone()
                self._scaler_factors = (float(scaler._init_scale), float(scaler._backoff_factor))
            if self._last_loss is not None:
                loss = self._last_loss.float().reshape(1)
                if scale is not None:  # backward() ran on scaler.scale(loss): chart the loss
                    loss = loss / scale.to(loss.device)
        parts = [norms, *(t.to(norms.device) for t in (loss, scale) if t is not None)]
        label, step, has_loss, has_scale = ctx.label, ctx.step, loss is not None, scale is not None
        self.session.defer(torch.cat(parts) if len(parts) > 1 else norms,
                           lambda values: self._record(label, step, names, values, has_loss, has_scale),
                           owner=self)

    def on_step_post(self, ctx: Any) -> None:
        optimizer = ctx.optimizer
        self._counts[optimizer] = self._counts.get(optimizer, 0) + 1
        self.steps += 1
        self.steps_by_optimizer[ctx.label] = self.steps_by_optimizer.get(ctx.label, 0) + 1
        if self.progress is not None:
            now = time.monotonic()
            if now - self._last_draw >= self.progress_interval:
                self._last_draw = now
                self.draw_progress()
        if self.max_steps is not None and not self.stopped:
            if min(self._counts.values()) >= self.max_steps:
                self.stopped = True
                raise MaxStepsReached(self.max_steps)

    def close(self) -> None:
        self._last_loss = None
        self.clear_progress()

    # -- the chart history --------------------------------------------------------------------
    def _param_names(self, ctx: Any) -> list[str]:
        names = self._names.get(ctx.optimizer)
        if names is None or len(names) != len(ctx.params):
            names = []
            for i, p in enumerate(ctx.params):
                try:
                    names.append(ctx.name(p, i))
                except Exception:
                    names.append(f"{ctx.label}.params[{i}]")
            self._names[ctx.optimizer] = names
        return names

    def _record(self, label: str, step: int, names: list[str], values: list[float],
                has_loss: bool, has_scale: bool) -> None:
        hist = self.history
        if hist is None:
            return
        try:
            self._add_to_history(hist, label, step, names, values, has_loss, has_scale)
        except Exception:  # a chart is never worth a crash
            pass

    def _add_to_history(self, hist: History, label: str, step: int, names: list[str],
                        values: list[float], has_loss: bool, has_scale: bool) -> None:
        norms = values[:len(names)]
        rest = values[len(names):]
        loss_value = rest.pop(0) if has_loss else None
        if has_scale:
            hist.add_scale(step, rest.pop(0), *self._scaler_factors)
        total = math.sqrt(sum(v * v for v in norms)) if norms else 0.0
        hist.add_step(label, step, total, loss_value)
        layers: dict[str, float] = {}
        for name, v in zip(names, norms):
            layer = layer_of(name)
            layers[layer] = layers.get(layer, 0.0) + v * v
        hist.add_layers(step, {k: math.sqrt(v) for k, v in layers.items()})

    # -- progress line --------------------------------------------------------------------------
    def status_text(self) -> str:
        parts = [f"step {max(self._counts.values(), default=0)}"]
        if self._last_loss is not None:
            try:
                parts.append(f"loss {float(self._last_loss.float()):.4g}")
            except Exception:
                pass
        n = len(self.session.findings)
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
    writes go to the real stream, each after :meth:`RunMonitor.before_script_write` cleared
    the status line (a status line has no newline; without this, the script's next line would
    be glued to its end). Everything else is the real stream's (``fileno``, ``isatty``,
    ``encoding``, ``buffer``...)."""

    def __init__(self, stream: TextIO, monitor: RunMonitor) -> None:
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
def status_line_aware_streams(monitor: RunMonitor) -> Iterator[None]:
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
