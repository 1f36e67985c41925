"""`torch-audit run --html`: one self-contained file with the charts and the findings, checked in
a real headless browser (Debian's `chromium`; skipped with a reason when none is installed)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from torch_audit.findings import Finding
from torch_audit.report.html import heatmap, line_chart, render_html
from torch_audit.runtime.run_command import run
from torch_audit.runtime.run_history import History

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fixtures" / "run"
DEMO = RUN / "train_demo.py"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> tuple[Path, str]:
    """The demo run (160 steps; the learning rate explodes at 150) with --html."""
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = CliRunner().invoke(run, ["--html", str(out), str(DEMO), "160"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # non-finite loss and gradients are errors
    return out, out.read_text()


def test_report_is_self_contained_with_charts_and_findings(demo_report):
    path, text = demo_report
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "fetches from the network"
    assert "<link" not in text and "@import" not in text
    for chart in ("chart-loss", "chart-grad-norm", "chart-layer-heatmap"):
        assert f'id="{chart}"' in text
    # the heatmap has one row per layer with parameters
    heat = text[text.index('id="chart-layer-heatmap"'):]
    heat = heat[:heat.index("</svg>")]
    assert {"body.0", "body.2", "head"} <= set(re.findall(r">(body\.\d|head)</text>", heat))
    # the loss went non-finite: red marks on the loss chart
    loss = text[text.index('id="chart-loss"'):]
    assert 'class="data nonfinite"' in loss[:loss.index("</svg>")]
    codes = set(re.findall(r'<article class="finding" data-code="(TA\d+)"', text))
    assert {"TA701", "TA702", "TA704"} <= codes
    # source snippets: the line of the class the finding points at is highlighted
    assert '<span class="hit"><i>9</i>class MLP(nn.Module):</span>' in text


def test_charts_handle_nonfinite_zero_and_single_points():
    one = line_chart({"loss": [(0, 1.5)]}, title="t", y_label="y", chart_id="c")
    assert "<circle" in one
    bad = line_chart({"a": [(0, 1.0), (1, math.nan), (2, math.inf)]}, title="t", y_label="y", chart_id="c")
    assert bad.count('class="data nonfinite"') == 2
    grid = heatmap({"l": {0: 0.0, 1: math.nan, 2: 1.0}}, title="t", chart_id="h")
    assert "#e5e7eb" in grid and "#dc2626" in grid
    assert line_chart({}, title="t", y_label="y", chart_id="c") == ""
    empty = render_html([], history=History())
    assert "No findings." in empty and "chart-loss" not in empty


def test_history_decimates_layer_columns():
    h = History(max_columns=8)
    for step in range(40):
        h.add_layers(step, {"a": float(step)})
    assert len(h.layer_norms["a"]) <= 8 and h.layer_stride > 1
    assert all(s % h.layer_stride == 0 for s in h.layer_norms["a"])


def test_history_series_are_bounded_and_keep_spikes_and_nonfinite_values():
    from torch_audit.runtime.run_history import StepSeries

    series = StepSeries(max_buckets=16)
    for step in range(10_000):
        value = 1.0 + (step % 3) * 0.1
        if step == 4321:
            value = 1e6  # one spike
        if step == 7777:
            value = math.nan
        series.add(step, value)
    points = list(series)
    assert len(points) <= 32 and series.stride > 1
    assert (4321, 1e6) in points  # with its own step, not a bucket's
    assert any(s == 7777 and math.isnan(v) for s, v in points)
    assert [s for s, _ in points] == sorted(s for s, _ in points)
    assert points[0] == (0, 1.0) and min(v for _, v in points) == 1.0
    chart = line_chart({"loss": series}, title="t", y_label="y", chart_id="c")
    assert chart.count('class="data nonfinite"') == 1 and "step 7777" in chart


def test_findings_are_escaped():
    f = Finding(code="TA701", name="nonfinite-loss", severity="error", message="<script>x</script>", step=0)
    text = render_html([f])
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>x</script>" not in text


def test_renders_in_headless_chromium(demo_report, tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip("no chromium binary found (Debian: apt-get install chromium); .ci/run installs it")
    path, _ = demo_report
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--hide-scrollbars", "--window-size=1100,2000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the inline script ran after layout and found every chart drawn with a real size
    assert 'data-charts-rendered="3"' in dom.stdout, dom.stdout[:500]
    assert dom.stdout.count('data-rendered="yes"') == 3
    assert len(re.findall(r'<article class="finding"', dom.stdout)) >= 3
    shot = tmp_path / "report.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", path.as_uri()], capture_output=True,
                   timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # not a blank page


def test_amp_charts_the_unscaled_loss_and_marks_the_skipped_steps(tmp_path):
    # issue 19 item 10: the loss seen by backward() is scaler.scale(loss), ~1e38 times the loss
    from torch_audit.runtime.audited_run import audit_script

    iterations = 20
    outcome = audit_script(str(RUN / "amp_skips.py"), [str(iterations)], history=True)
    assert outcome.status == 0
    hist = outcome.history
    losses = [v for _, v in hist.loss]
    assert losses and max(losses) < 1000, losses  # unscaled: about 100 (scaled: 128 to 65536x that)
    skipped = iterations - outcome.steps
    assert skipped > 0
    assert sum(hist.skipped.values()) == skipped
    page = tmp_path / "amp.html"
    result = CliRunner().invoke(run, ["--html", str(page), str(RUN / "amp_skips.py"), str(iterations)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert f"GradScaler skipped {skipped} step" in text
