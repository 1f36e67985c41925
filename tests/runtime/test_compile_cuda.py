"""torch.compile'd models train under a session; CUDA: no host sync inside the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit


def _train_compiled(backend: str, steps: int = 3):
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit() as session:
        for step in range(steps):
            x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
            if step == steps - 1:
                x[0, 0] = float("nan")
            opt.zero_grad()
            F.cross_entropy(compiled(x), y).backward()
            opt.step()
    return session


def test_compiled_model_trains_under_audit_eager_backend():
    session = _train_compiled("eager")
    # modules inside the compiled region are not seen one by one, but loss and gradients are
    assert {"TA701", "TA702"} <= set(session.codes)
    assert "TA799" not in session.codes


@pytest.mark.slow
def test_compiled_model_trains_under_audit_inductor():
    pytest.importorskip("torch._inductor")
    try:
        session = _train_compiled("inductor")
    except Exception as e:  # pragma: no cover - no C++ toolchain on this machine
        if "compiler" in str(e).lower() or "cpp" in str(e).lower():
            pytest.skip(f"inductor cannot build here: {e}")
        raise
    assert {"TA701", "TA702"} <= set(session.codes)
    assert "TA799" not in session.codes


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_default_checks_do_not_synchronise_inside_the_step():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xs = [torch.randn(32, 64, device=dev) for _ in range(5)]
    ys = [torch.randint(0, 10, (32,), device=dev) for _ in range(5)]
    with torch_audit.audit() as session:
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x, y in zip(xs, ys):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert session.findings == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_nan_is_reported_one_step_late_without_sync():
    dev = torch.device("cuda")
    model = nn.Linear(4, 1).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit() as session:
        for step in range(3):
            x = torch.randn(8, 4, device=dev)
            if step == 1:
                x[0, 0] = float("nan")
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    assert "TA701" in session.codes and "TA702" in session.codes
    assert min(f.step for f in session.findings) == 1
