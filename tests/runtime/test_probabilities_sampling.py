"""probabilities-into-cross-entropy (TA707) samples its reads per call site, not per optimizer
step: a script without an optimizer (a hand-written update, session.step stays 0) was read at
every call, a full reduction over the logits each time. Each read covers at most 64 rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime.check import RuntimeCheck


def _count_reads(monkeypatch) -> list:
    reads: list = []
    real = RuntimeCheck.defer

    def defer(self, value, callback, *args, **kwargs):
        if self.code == "TA707":
            reads.append(tuple(value.shape))
        return real(self, value, callback, *args, **kwargs)

    monkeypatch.setattr(RuntimeCheck, "defer", defer)
    return reads


def _manual_fit(calls: int, softmax_from: int | None = None, batch: int = 32):
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    for i in range(calls):
        x, y = torch.randn(batch, 8), torch.randint(0, 4, (batch,))
        out = model(x)
        if softmax_from is not None and i >= softmax_from:
            out = out.softmax(dim=1)
        loss = F.cross_entropy(out, y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad


def test_a_script_without_optimizer_is_sampled_per_call_site(monkeypatch):
    reads = _count_reads(monkeypatch)
    with torch_audit.audit(config=False, select=["TA707"]) as session:
        _manual_fit(40)
    assert len(reads) == 3 + 3  # calls 0, 1, 2, then 10, 20 and 30
    assert session.findings == []


def test_probabilities_after_the_first_calls_are_found_at_a_sampled_call():
    with torch_audit.audit(config=False, select=["TA707"]) as session:
        _manual_fit(25, softmax_from=12)  # call 20 is read
    assert [f.code for f in session.findings] == ["TA707"], session.report()


def test_a_large_batch_is_read_on_a_sample_of_rows(monkeypatch):
    seen = []
    real_amin = torch.Tensor.amin

    with torch_audit.audit(config=False, select=["TA707"]) as session:
        monkeypatch.setattr(torch.Tensor, "amin", lambda self, *a, **k: (seen.append(self.shape[0]), real_amin(self, *a, **k))[1])
        _manual_fit(1, softmax_from=0, batch=1000)
        monkeypatch.undo()
    assert seen == [64]
    assert [f.code for f in session.findings] == ["TA707"], session.report()
