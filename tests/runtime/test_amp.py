"""Mixed precision with a GradScaler: the scaler's own skipped steps (overflowing float16
gradients while it calibrates its scale) are silent, a NaN it would skip forever is not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_audit

pytestmark = pytest.mark.skipif(
    not hasattr(torch.amp, "GradScaler"), reason="needs torch.amp.GradScaler"
)


def _train(x: torch.Tensor, init_scale: float, steps: int = 30):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=3)
    y = torch.randint(0, 4, (x.shape[0],))
    with torch_audit.audit(config=False) as session:
        for _ in range(steps):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
    return session, scaler.get_scale()


def test_steps_the_scaler_skips_are_silent():
    session, scale = _train(torch.randn(32, 16), init_scale=2.0**40)
    assert scale < 2.0**40, "the scenario must make the scaler skip steps"
    assert session.findings == [], session.report()


def test_a_nan_the_scaler_would_skip_forever_is_reported():
    x = torch.randn(32, 16)
    x[3, 5] = float("nan")
    session, scale = _train(x, init_scale=2.0**16, steps=5)
    assert scale < 2.0**16  # every step skipped: the model never trains, and nothing crashes
    codes = {f.code for f in session.findings}
    assert "TA701" in codes, session.report()  # nonfinite-loss
    assert "TA702" not in codes, "the skipped steps never reach the optimizer"
