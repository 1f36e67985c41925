"""gradients-not-cleared on hand-written updates (no torch.optim optimizer) pays for parameter
norms only once gradients were left uncleared between two ``backward()`` calls: a loop that
clears them, the usual case, reads no parameter at all."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime import check_helpers


def _fit(clear: bool, steps: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    for _ in range(steps):
        if clear:
            model.zero_grad()
        F.mse_loss(model(torch.randn(32, 8)), torch.randn(32, 1)).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad


def _counting_norms(monkeypatch) -> list[int]:
    calls = []
    original = check_helpers.norms

    def norms(tensors, *args, **kwargs):
        calls.append(len(tensors))
        return original(tensors, *args, **kwargs)

    monkeypatch.setattr(check_helpers, "norms", norms)
    return calls


def test_a_loop_that_clears_its_gradients_reads_no_parameter_norms(monkeypatch):
    calls = _counting_norms(monkeypatch)
    with torch_audit.audit(config=False, select=["gradients-not-cleared"]) as session:
        _fit(clear=True, steps=20)
    assert calls == []
    assert session.findings == []


def test_uncleared_gradients_are_still_reported_one_backward_later(monkeypatch):
    calls = _counting_norms(monkeypatch)
    with torch_audit.audit(config=False, select=["gradients-not-cleared"]) as session:
        _fit(clear=False, steps=4)
    assert session.codes == ["TA804"], session.report()
    assert calls  # the norms were read once the gradients were seen uncleared
    with torch_audit.audit(config=False, select=["gradients-not-cleared"]) as session:
        _fit(clear=False, steps=3)
    assert session.findings == []  # two uncleared pairs with norms need four backward() calls
