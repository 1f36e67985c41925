"""exploding-gradient on one parameter: its own jump is reported when it matters to the
gradient (at least min_share of the global norm), even though the global norm barely moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torch_audit


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Linear(8, 1)
        self.side = nn.Linear(8, 1)

    def forward(self, a, b):
        return self.main(a) + self.side(b)


def _run(side_scale: float, jump: float):
    torch.manual_seed(0)
    model = TwoInputs()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with torch_audit.audit(config=False, select=["exploding-gradient"]) as session:
        for step in range(12):
            a, b, y = torch.randn(32, 8), torch.randn(32, 8), torch.randn(32, 1)
            scale = side_scale * (jump if step == 10 else 1.0)
            opt.zero_grad()
            nn.functional.mse_loss(model(a, b * scale), y).backward()
            opt.step()
    return session


@pytest.mark.parametrize("side_scale, reported", [
    (0.05, True),    # 30x: from ~5% to most of the gradient
    (0.002, False),  # 30x: from ~0.2% to ~6%, a jump that explodes nothing
])
def test_a_parameter_jump_is_reported_when_it_carries_the_gradient(side_scale, reported):
    session = _run(side_scale, jump=30.0)
    names = {f.module for f in session.findings}
    assert ("side" in names) is reported, session.report()
    assert not any(f.message.startswith("global") for f in session.findings), "the global norm did not jump 10x"
