"""What ``torch-audit run --html`` charts: the loss and the global gradient norm per optimizer
step and per-layer gradient norms, decimated so that a run of a million steps records no more
than one of a thousand (:class:`StepSeries`, :class:`History`). Recorded by
:class:`torch_audit.runtime.run_monitor.RunMonitor`; drawn by ``torch_audit.report.html``.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

__all__ = ["History", "StepSeries", "layer_of"]


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

