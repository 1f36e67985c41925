"""The ``--html`` report of ``torch-audit run``: one self-contained file.

Everything is inline: CSS, SVG charts drawn here in Python (the loss and the global gradient norm
per optimizer step, a per-layer gradient-norm heatmap over steps) and a few lines of script that
only mark which charts the browser laid out (``data-rendered``; tests read it). Nothing is
fetched from the network. The findings are listed with a snippet of the source they point at.

This module imports neither torch nor anything outside the standard library; ``history`` is any
object with the attributes of :class:`torch_audit.runtime.run_history.History` (``loss``,
``grad_norm``, ``layer_norms``), ``profile`` the JSON form of a model profile.
"""

from __future__ import annotations

import dataclasses

import datetime as _dt
import html
import linecache
import math
import os
from collections import Counter
from typing import Any, Iterable, Mapping

from torch_audit.findings import Finding, Severity

__all__ = ["render_html", "line_chart", "heatmap"]

WIDTH, HEIGHT = 760, 260
PAD_L, PAD_R, PAD_T, PAD_B = 72, 16, 16, 40
SERIES_COLORS = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2"]
BAD = "#dc2626"
MARK = "#ea580c"  # steps a GradScaler skipped
_VIRIDIS_ZERO = "#e5e7eb"
# viridis, 9 anchors
_VIRIDIS = [
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
]

_CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#ffffff; --panel:#f9fafb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 24px 32px 48px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 18px 0 6px; }
.meta { color: var(--muted); margin: 0 0 12px; }
.meta td { padding: 0 14px 0 0; vertical-align: top; }
.meta td:first-child { font-weight: 600; }
.badges span { display: inline-block; padding: 2px 10px; border-radius: 999px; margin-right: 6px;
               font-weight: 600; font-size: 13px; }
.sev-error { background: #fee2e2; color: #991b1b; }
.sev-warning { background: #fef3c7; color: #92400e; }
.sev-info { background: #e0f2fe; color: #075985; }
.ok { background: #dcfce7; color: #166534; }
.finding { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 10px 0;
           background: var(--panel); }
.finding header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.finding .code { font-weight: 700; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.finding .name { color: var(--muted); }
.finding .where { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.finding .facts { color: var(--muted); font-size: 12.5px; margin-top: 2px; }
.finding .help { margin: 2px 0 0; }
.finding p { margin: 4px 0; }
pre.snippet { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 8px 0 2px;
              padding: 6px 0; overflow-x: auto; font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre.snippet span { display: block; padding: 0 10px; white-space: pre; }
pre.snippet span.hit { background: #fef9c3; }
pre.snippet i { color: var(--muted); font-style: normal; display: inline-block; width: 4.5em;
                text-align: right; margin-right: 10px; user-select: none; }
figure { margin: 8px 0 18px; }
figcaption { color: var(--muted); font-size: 12.5px; }
svg.chart { background: #fff; border: 1px solid var(--line); border-radius: 6px; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #374151; }
svg .grid { stroke: #eef0f3; }
svg .axis { stroke: #9ca3af; }
table.profile { border-collapse: collapse; font-size: 12.5px; width: 100%; }
table.profile th, table.profile td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: right;
                                     white-space: nowrap; }
table.profile th:nth-child(-n+2), table.profile td:nth-child(-n+2), table.profile td:nth-child(5) { text-align: left; }
table.profile tr.total td { font-weight: 700; border-top: 2px solid #9ca3af; }
.empty { color: var(--muted); }
"""

# Marks each chart the browser laid out with a real size; the HTML test reads these marks.
_SCRIPT = """
(function () {
  var n = 0;
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var marks = svg.querySelectorAll('.data');
    var ok = marks.length > 0;
    marks.forEach(function (m) { var b = m.getBBox(); if (!(b.width > 0 || b.height > 0)) ok = false; });
    var r = svg.getBoundingClientRect();
    if (ok && r.width > 0 && r.height > 0) { svg.setAttribute('data-rendered', 'yes'); n++; }
  });
  document.body.setAttribute('data-charts-rendered', String(n));
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


def _pow10(exponent: float) -> str:
    if not float(exponent).is_integer():
        return _fmt(10 ** exponent)
    k = int(exponent)
    return {-2: "0.01", -1: "0.1", 0: "1", 1: "10", 2: "100"}.get(k, f"1e{k}")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9 and len(ticks) < 20:
        ticks.append(round(t, 12))
        t += step
    return ticks


@dataclasses.dataclass
class _Plot:
    """The scales of a line chart: steps ``x0..x1`` across, values ``lo..hi`` up (log10 of the
    values when ``log``)."""

    x0: float
    x1: float
    lo: float
    hi: float
    log: bool

    @property
    def width(self) -> float:
        return WIDTH - PAD_L - PAD_R

    @property
    def height(self) -> float:
        return HEIGHT - PAD_T - PAD_B

    def px(self, s: float) -> float:
        return PAD_L + (s - self.x0) / (self.x1 - self.x0) * self.width

    def py(self, v: float) -> float:
        return PAD_T + (1 - (v - self.lo) / (self.hi - self.lo)) * self.height

    def tf(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def plotted(self, v: Any) -> bool:
        return _finite(v) and (v > 0 or not self.log)


def _plot_scales(series: Mapping[str, Iterable[tuple[int, float]]], log: bool | None) -> _Plot | None:
    finite = [v for pts in series.values() for _, v in pts if _finite(v)]
    steps = [s for pts in series.values() for s, _ in pts]
    if not steps:
        return None
    if log is None:
        pos = [v for v in finite if v > 0]
        log = bool(pos) and len(pos) == len(finite) and max(pos) / min(pos) > 100
    ys = [math.log10(v) if log else v for v in finite if (v > 0 or not log)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    else:
        margin = (hi - lo) * 0.05
        lo, hi = lo - margin, hi + margin
    if log:
        lo, hi = math.floor(lo * 2) / 2, math.ceil(hi * 2) / 2
    x0, x1 = min(steps), max(steps)
    return _Plot(x0, x1 if x1 != x0 else x0 + 1, lo, hi, log)


def _chart_axes(plot: _Plot, y_label: str) -> list[str]:
    """Grid lines and labels of both axes."""
    out = []
    ticks = [t for t in _nice_ticks(plot.lo, plot.hi) if plot.lo <= t <= plot.hi]
    if plot.log:
        decades = list(range(math.ceil(plot.lo), math.floor(plot.hi) + 1))
        every = max(1, math.ceil(len(decades) / 7))
        ticks = [float(t) for t in decades if t % every == 0] or ticks
    for t in ticks:
        y = plot.py(t)
        label = _pow10(t) if plot.log else _fmt(t)
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(label)}</text>')
    for t in _nice_ticks(plot.x0, plot.x1, 6):
        if plot.x0 <= t <= plot.x1 and float(t).is_integer():
            x = plot.px(t)
            out.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - PAD_B}" y2="{HEIGHT - PAD_B + 4}"/>')
            out.append(f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<line class="axis" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{HEIGHT - PAD_B}" y2="{HEIGHT - PAD_B}"/>')
    out.append(f'<line class="axis" x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{HEIGHT - PAD_B}"/>')
    out.append(f'<text x="{PAD_L + plot.width / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">optimizer step</text>')
    out.append(
        f'<text transform="translate(12 {PAD_T + plot.height / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f'{_e(y_label + (" (log)" if plot.log else ""))}</text>'
    )
    return out


def _chart_series(plot: _Plot, label: str, pts: Iterable[tuple[int, float]], color: str) -> list[str]:
    """One series: a path broken at values it cannot plot, which become red marks on top."""
    out = []
    path: list[str] = []
    pen_up = True
    bad = []
    for s, v in pts:
        if not plot.plotted(v):
            bad.append((s, v))
            pen_up = True
            continue
        path.append(f"{'M' if pen_up else 'L'}{plot.px(s):.1f},{plot.py(plot.tf(v)):.1f}")
        pen_up = False
    if path:
        out.append(f'<path class="data" d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="1.8">'
                   f'<title>{_e(label)}</title></path>')
        if len(path) == 1:
            x, y = path[0][1:].split(",")
            out.append(f'<circle class="data" cx="{x}" cy="{y}" r="3" fill="{color}"/>')
    for s, v in bad:
        out.append(f'<rect class="data nonfinite" x="{plot.px(s) - 3:.1f}" y="{PAD_T - 2}" width="6" height="8" '
                   f'fill="{BAD}"><title>step {s}: {_e(v)}</title></rect>')
    return out


def line_chart(
    series: Mapping[str, Iterable[tuple[int, float]]],
    *,
    title: str,
    y_label: str,
    chart_id: str,
    log: bool | None = None,
    marks: Mapping[int, str] | None = None,
) -> str:
    """An SVG line chart of ``{label: [(step, value)]}``; non-finite values are red marks on
    the top edge. ``log=None`` picks a log scale when positive values span > 2 decades.
    ``marks``: ``{step: text}`` drawn as dashed vertical lines (e.g. steps a GradScaler skipped)."""
    plot = _plot_scales(series, log)
    if plot is None:
        return ""
    out = [
        f'<svg class="chart" id="{_e(chart_id)}" role="img" aria-label="{_e(title)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        *_chart_axes(plot, y_label),
    ]
    for i, (label, pts) in enumerate(series.items()):
        out.extend(_chart_series(plot, label, pts, SERIES_COLORS[i % len(SERIES_COLORS)]))
    for s, text in sorted((marks or {}).items()):
        x = plot.px(min(max(s, plot.x0), plot.x1))
        out.append(f'<line class="mark" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{HEIGHT - PAD_B}" '
                   f'stroke="{MARK}" stroke-width="1.2" stroke-dasharray="3 3"><title>{_e(text)}</title></line>')
    if len(series) > 1:  # a legend
        for i, label in enumerate(series):
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            y = PAD_T + 12 + i * 14
            out.append(f'<rect x="{WIDTH - PAD_R - 130}" y="{y - 8}" width="10" height="10" fill="{color}"/>')
            out.append(f'<text x="{WIDTH - PAD_R - 116}" y="{y + 1}">{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _viridis(t: float) -> str:
    t = min(1.0, max(0.0, t)) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return "#%02x%02x%02x" % tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))


def _binned(rows: Mapping[str, Mapping[int, float]], names: list[str], steps: list[int],
            max_columns: int) -> tuple[list[list[int]], list[list[float | None]]]:
    """The steps in at most ``max_columns`` bins, and each row's value per bin: the largest,
    NaN when any is non-finite, None when the row has no value there."""
    nbins = min(max_columns, len(steps))
    bins: list[list[int]] = [[] for _ in range(nbins)]
    for i, s in enumerate(steps):
        bins[i * nbins // len(steps)].append(s)
    values: list[list[float | None]] = []
    for name in names:
        r = rows[name]
        row: list[float | None] = []
        for b in bins:
            vals = [r[s] for s in b if s in r]
            if not vals:
                row.append(None)
            elif any(not _finite(v) for v in vals):
                row.append(float("nan"))
            else:
                row.append(max(vals))
        values.append(row)
    return bins, values


def _heat_row(name: str, row: list[float | None], bins: list[list[int]], *, x: float, y: float, cell_w: float,
              cell_h: int, lo: float, hi: float) -> list[str]:
    """One layer's cells, from ``x`` right, each titled with its steps and value."""
    out = []
    for i, v in enumerate(row):
        if v is None:
            continue
        b = bins[i]
        span = f"step {b[0]}" if len(b) == 1 else f"steps {b[0]}–{b[-1]}"
        out.append(
            f'<rect class="data" x="{x + i * cell_w:.2f}" y="{y}" width="{cell_w + 0.3:.2f}" '
            f'height="{cell_h}" fill="{_heat_color(v, lo, hi)}">'
            f'<title>{_e(name)}, {span}: {_e(_fmt(v) if _finite(v) else v)}</title></rect>'
        )
    return out


def _log_range(values: list[list[float | None]]) -> tuple[float, float]:
    """The range of log10 of the positive finite values (a decade around a single value)."""
    logs = [math.log10(v) for row in values for v in row if v is not None and _finite(v) and v > 0]
    lo, hi = (min(logs), max(logs)) if logs else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _heat_color(v: float, lo: float, hi: float) -> str:
    if not _finite(v):
        return BAD
    if v <= 0:
        return _VIRIDIS_ZERO
    return _viridis((math.log10(v) - lo) / (hi - lo))


def heatmap(
    rows: Mapping[str, Mapping[int, float]],
    *,
    title: str,
    chart_id: str,
    max_columns: int = 120,
    max_rows: int = 60,
) -> str:
    """Layers × steps, colour = log10 of the gradient norm (viridis); red for non-finite.
    Steps are binned to at most ``max_columns`` columns (the largest value of a bin is shown,
    a non-finite one wins)."""
    names = list(rows)
    steps = sorted({s for r in rows.values() for s in r})
    if not names or not steps:
        return ""
    dropped = max(0, len(names) - max_rows)
    names = names[:max_rows]
    bins, values = _binned(rows, names, steps, max_columns)
    nbins = len(bins)
    lo, hi = _log_range(values)
    label_w = min(220, 12 + 7 * max(len(n) for n in names))
    cell_h = 14 if len(names) <= 30 else 9
    plot_w = WIDTH - label_w - PAD_R - 70
    cell_w = plot_w / nbins
    height = PAD_T + cell_h * len(names) + PAD_B
    out = [
        f'<svg class="chart" id="{_e(chart_id)}" role="img" aria-label="{_e(title)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for j, name in enumerate(names):
        y = PAD_T + j * cell_h
        shown = name if len(name) <= 30 else "…" + name[-29:]
        if cell_h >= 12 or j % 2 == 0:
            out.append(f'<text x="{label_w - 6}" y="{y + cell_h - 3:.1f}" text-anchor="end">{_e(shown)}</text>')
        out.extend(_heat_row(name, values[j], bins, x=label_w, y=y, cell_w=cell_w, cell_h=cell_h, lo=lo, hi=hi))
    yb = PAD_T + cell_h * len(names)
    for t in _nice_ticks(0, nbins - 1, 6):
        if float(t).is_integer() and 0 <= t < nbins:
            x = label_w + (t + 0.5) * cell_w
            out.append(f'<text x="{x:.1f}" y="{yb + 16}" text-anchor="middle">{bins[int(t)][0]}</text>')
    out.append(f'<text x="{label_w + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">optimizer step</text>')
    out.extend(_colour_scale(lo, hi, max(40.0, cell_h * len(names))))
    out.append("</svg>")
    note = f'<figcaption>{dropped} more layer(s) not shown.</figcaption>' if dropped else ""
    return "".join(out) + note


def _colour_scale(lo: float, hi: float, sh: float) -> list[str]:
    """The heatmap's colour scale, ``sh`` high, labelled with the values at its ends."""
    sx = WIDTH - PAD_R - 50
    out = [f'<rect x="{sx}" y="{PAD_T + sh * (1 - (k + 1) / 20):.1f}" width="12" height="{sh / 20 + 0.5:.1f}" '
           f'fill="{_viridis(k / 19)}"/>' for k in range(20)]
    out.append(f'<text x="{sx + 16}" y="{PAD_T + 9}">{_e(_fmt(10 ** hi))}</text>')
    out.append(f'<text x="{sx + 16}" y="{PAD_T + sh:.1f}">{_e(_fmt(10 ** lo))}</text>')
    return out


def _snippet(path: str, line: int, root: str, context: int = 3) -> str:
    if not path:
        return ""
    candidates = [path] if os.path.isabs(path) else [os.path.join(root, path), path]
    full = next((c for c in candidates if os.path.isfile(c)), None)
    if full is None:
        return ""
    linecache.checkcache(full)
    first = max(1, line - context)
    rows = []
    for n in range(first, line + context + 1):
        text = linecache.getline(full, n)
        if not text and n > line:
            break
        cls = ' class="hit"' if n == line else ""
        rows.append(f'<span{cls}><i>{n}</i>{_e(text.rstrip())}</span>')
    return f'<pre class="snippet">{"".join(rows)}</pre>' if rows else ""


def _finding_html(f: Finding, root: str) -> str:
    sev = f.severity.value
    where = f"{f.path}:{f.line}:{f.column}" if f.path else ""
    labels = {
        "module": lambda v: f"module <code>{_e(v)}</code>",
        "step": lambda v: f"first at step {v}",
        "count": lambda v: f"seen {v}×",
        "value": lambda v: f"value {_e(_fmt(v) if isinstance(v, float) else v)}",
        "rank": lambda v: f"rank {v}",
    }
    facts = [labels[key](value) for key, value in f.runtime_facts()]
    return (
        f'<article class="finding" data-code="{_e(f.code)}">'
        f'<header><span class="sev-{sev} badge">{_e(sev)}</span>'
        f'<span class="code">{_e(f.code)}</span><span class="name">{_e(f.name)}</span>'
        f'<span class="where">{_e(where)}</span></header>'
        f"<p>{_e(f.message)}</p>"
        + (f'<p class="help"><b>help:</b> {_e(f.help)}</p>' if f.help else "")
        + (f'<div class="facts">{" · ".join(facts)}</div>' if facts else "")
        + _snippet(f.path, f.line, root)
        + "</article>"
    )


def _profile_html(profile: Mapping[str, Any]) -> str:
    def count(n: float) -> str:
        for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(n) >= div:
                return f"{n / div:.2f}{unit}"
        return str(int(n))

    def size(n: float) -> str:
        for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(n) >= div:
                return f"{n / div:.1f} {unit}"
        return f"{int(n)} B"

    head = ["module", "type", "calls", "params", "output", "fwd ms", "bwd ms", "fwd FLOPs", "bwd FLOPs", "peak mem"]
    rows = []
    from torch_audit.runtime.profile import total_label

    total = _e(total_label(profile.get("backward_from", "")))
    for m in [*profile.get("modules", []), {**profile.get("totals", {}), "_total": True}]:
        name = m.get("name", "")
        label = total if m.get("_total") else ("&nbsp;" * 3 * m.get("depth", 0)) + _e(name or profile.get("model", "model"))
        shapes = ", ".join("[" + ",".join(map(str, s)) + "]" for s in m.get("output_shapes", [])[:2])
        cells = [label, _e(m.get("type", "")), str(m.get("calls", 0)), count(m.get("params", 0)), _e(shapes),
                 f"{m.get('forward_ms', 0):.3f}", f"{m.get('backward_ms', 0):.3f}",
                 count(m.get("forward_flops", 0)), count(m.get("backward_flops", 0)),
                 size(m.get("peak_memory_bytes", 0))]
        cls = ' class="total"' if m.get("_total") else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    inputs = ", ".join(f"{_e(i['dtype'])}[{','.join(map(str, i['shape']))}]" for i in profile.get("inputs", []))
    return (
        f'<p class="meta">{_e(profile.get("model", ""))} on {_e(profile.get("device", ""))}; inputs: {inputs or "none"}; '
        f'backward from {_e(profile.get("backward_from", ""))}</p>'
        '<table class="profile"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )


def _charts_html(history: Any) -> list[str]:
    """The training charts: loss (GradScaler's skipped steps marked), global gradient norm, and
    the per-layer heatmap, each a figure with its caption."""
    parts = []
    if history.loss:
        skipped = dict(getattr(history, "skipped", {}) or {})
        marks = {step: f"GradScaler skipped {n} step{'s' if n != 1 else ''} before step {step}"
                 for step, n in skipped.items()}
        caption = ("Loss of the last backward() before each optimizer step (under a GradScaler, "
                   "the unscaled loss); red marks are non-finite values.")
        if marks:
            total = sum(skipped.values())
            caption += (f" Dashed lines: GradScaler skipped {total} step{'s' if total != 1 else ''} "
                        "(scaled gradients overflowed; the scale was lowered): "
                        + "; ".join(marks[s] for s in sorted(marks)[:5])
                        + ("; …" if len(marks) > 5 else "") + ".")
        parts.append("<figure>" + line_chart({"loss": history.loss}, title="Loss", y_label="loss",
                                              chart_id="chart-loss", marks=marks)
                     + f"<figcaption>{_e(caption)}</figcaption></figure>")
    if history.grad_norm:
        parts.append("<figure>" + line_chart(history.grad_norm, title="Global gradient norm",
                                              y_label="grad norm", chart_id="chart-grad-norm")
                     + "<figcaption>Global L2 norm of the gradients at each optimizer step.</figcaption></figure>")
    if history.layer_norms:
        parts.append("<figure>" + heatmap(history.layer_norms, title="Per-layer gradient norm",
                                           chart_id="chart-layer-heatmap")
                     + "<figcaption>Gradient norm per layer and step (log colour scale, "
                       "red: non-finite, grey: zero).</figcaption></figure>")
    return parts


def render_html(
    findings: Iterable[Finding],
    *,
    history: Any = None,
    title: str = "torch-audit report",
    root: str | os.PathLike[str] = ".",
    profile: Mapping[str, Any] | None = None,
    meta: Mapping[str, str] | None = None,
) -> str:
    """The whole report as one HTML document (a string)."""
    from torch_audit.report._order import root_cause_first

    findings = root_cause_first(findings)  # a chain of non-finite findings: its root first
    root = os.fspath(root)
    counts = Counter(f.severity for f in findings)
    badges = "".join(
        f'<span class="sev-{s.value}">{counts[s]} {s.value}{"s" if counts[s] != 1 and s is not Severity.INFO else ""}</span>'
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO) if counts[s]
    ) or '<span class="ok">no findings</span>'
    meta_rows = dict(meta or {})
    meta_rows.setdefault("generated", _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
    meta_html = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta_rows.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<table class="meta">{meta_html}</table>',
        f'<div class="badges" id="summary">{badges}</div>',
    ]
    if profile is not None:
        parts.append('<h2>Profile</h2><section id="profile">' + _profile_html(profile) + "</section>")
    if history is not None and not getattr(history, "empty", True):
        parts.extend(['<h2>Training</h2><section id="charts">', *_charts_html(history), "</section>"])
    parts.append(f'<h2>Findings ({len(findings)})</h2><section id="findings">')
    if findings:
        parts.extend(_finding_html(f, root) for f in findings)
    else:
        parts.append('<p class="empty">No findings.</p>')
    parts.append("</section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
