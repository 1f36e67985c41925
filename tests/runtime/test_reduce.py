"""The per-step reductions: exact about non-finite values, never fooled by float16 range."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torch_audit
from torch_audit.runtime.reduce import finite_sentinels, norms


def _flags(tensors):
    return [math.isfinite(v) for v in finite_sentinels(tensors).tolist()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sentinels_flag_exactly_the_tensors_with_nan_or_inf(dtype):
    clean = torch.randn(1000).to(dtype)
    bad = []
    for value in (float("nan"), float("inf"), float("-inf")):
        t = torch.randn(1000).to(dtype)
        t[500] = value
        bad.append(t)
    both = torch.randn(10).to(dtype)
    both[0], both[1] = float("inf"), float("-inf")  # inf - inf: still non-finite
    assert _flags([clean, *bad, both]) == [True, False, False, False, False]


def test_float16_values_whose_norm_overflows_float16_are_finite():
    big = torch.full((2_000_000,), 50.0, dtype=torch.float16)  # L2 norm 70,711 > 65,504
    assert not math.isfinite(torch._foreach_norm([big])[0].item())  # what a naive check sees
    assert _flags([big]) == [True]
    [n] = norms([big])
    assert n.dtype == torch.float32 and n.item() == pytest.approx(50.0 * math.sqrt(2_000_000), rel=1e-3)


class Loud(nn.Module):
    """A float16 layer whose healthy output's norm is beyond float16's range."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 50.0, dtype=torch.float16))

    def forward(self, x):
        return x * self.scale


def test_large_finite_float16_activations_and_gradients_are_not_reported():
    model = Loud()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.ones(2_000_000, dtype=torch.float16)
    with torch_audit.audit(select=["TA702", "TA703", "TA704"]) as session:
        for _ in range(2):
            opt.zero_grad()
            model(x).float().mean().backward()  # scale's gradient is 1: finite
            opt.step()
    assert session.findings == [], session.report()


def test_a_real_nan_activation_in_float16_is_still_reported():
    model = Loud()
    x = torch.ones(1000, dtype=torch.float16)
    x[3] = float("nan")
    with torch_audit.audit(select=["TA704"]) as session:
        model(x).float().sum().backward()
    assert [f.code for f in session.findings] == ["TA704"], session.report()


def test_norms_keep_input_order_across_precisions():
    tensors = [torch.full((4,), 3.0, dtype=torch.float64), torch.full((4,), 3.0, dtype=torch.float16),
               torch.full((4,), 3.0), torch.full((4,), 3.0, dtype=torch.bfloat16)]
    got = norms(tensors)
    assert [n.dtype for n in got] == [torch.float32] * 4
    assert [n.item() for n in got] == [6.0] * 4
    assert _flags(tensors) == [True] * 4


def _adam_with_poisoned_moment(steps: int, poison_at: int, **audit_kwargs):
    """AdamW whose second moment of one weight turns infinite after step ``poison_at``: the
    weight's updates become 0 (m / sqrt(inf)), so the parameters stay finite and only the
    optimizer state shows the problem."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    with torch_audit.audit(select=["TA703"], **audit_kwargs) as session:
        for step in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if step == poison_at:
                opt.state[model.weight]["exp_avg_sq"][0, 0] = float("inf")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return [(f.code, f.step) for f in session.findings], [f.message for f in session.findings]


def test_a_non_finite_optimizer_moment_is_found_by_the_sampled_state_check():
    found, messages = _adam_with_poisoned_moment(steps=25, poison_at=3)
    assert found == [("TA703", 10)], messages  # the next sampled step (every 10th by default)
    assert "exp_avg_sq" in messages[0]


def test_state_every_1_checks_the_state_on_every_step():
    found, _ = _adam_with_poisoned_moment(steps=8, poison_at=3,
                                          options={"nonfinite-parameter": {"state_every": 1}})
    assert found == [("TA703", 4)]


def test_many_small_cpu_tensors_take_the_segment_path_with_the_same_results():
    """From MANY_SMALL tensors on the CPU the reductions flatten them and reduce by segments
    (one kernel instead of one per tensor); the values, NaN/inf and empty tensors included,
    must be those of the per-tensor path."""
    import torch

    from torch_audit.runtime import reduce

    torch.manual_seed(0)
    ts = [torch.randn(4, 4) for _ in range(reduce.MANY_SMALL)]
    ts += [torch.randn(3, dtype=torch.float64), torch.randn(5).half(), torch.empty(0),
           torch.randn(6, 2).t(), torch.full((2,), 1e20)]
    ts[3][0, 0] = float("nan")
    ts[7][1, 1] = float("inf")
    assert reduce._small_on_cpu(ts) is not None
    want = torch.stack([torch.linalg.vector_norm(t.double()).float() for t in ts])
    got = reduce.norm_vector(ts)
    assert torch.allclose(got, want, equal_nan=True)
    assert got[-1].isfinite()  # elements above 1.8e19 square without overflowing
    assert torch.allclose(torch.stack(reduce.norms(ts)), want, equal_nan=True)
    sentinels = reduce.finite_sentinels(ts)
    per_tensor = torch.stack([t.sum(dtype=torch.float32) for t in ts])
    assert torch.equal(sentinels.isfinite(), per_tensor.isfinite())
    assert torch.allclose(sentinels, per_tensor, equal_nan=True, rtol=1e-4, atol=1e-4)


def test_when_the_flattening_fails_the_per_tensor_path_answers(monkeypatch):
    """A layout the flattening cannot take (it raises) gives the per-tensor results."""
    import torch

    from torch_audit.runtime import reduce

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot flatten this layout")

    ts = [torch.randn(3, 3) for _ in range(reduce.MANY_SMALL)]
    ts[5][0, 0] = float("inf")
    want = torch.stack([torch.linalg.vector_norm(t) for t in ts])
    monkeypatch.setattr(reduce, "_segments", refuse)
    assert torch.allclose(reduce.norm_vector(ts), want)
    assert torch.allclose(torch.stack(reduce.norms(ts)), want)
    assert reduce.finite_sentinels(ts).isfinite().tolist() == [i != 5 for i in range(len(ts))]


def test_large_tensors_are_reduced_where_they_are_and_only_small_ones_flattened(monkeypatch):
    """Flattening copies: with many small tensors and a few large ones (a real model's biases
    and weights), only the small ones go through the segment reduction, and the values are the
    per-tensor path's."""
    import torch

    from torch_audit.runtime import reduce

    torch.manual_seed(0)
    large = [torch.randn(reduce.SMALL_NUMEL + 1) for _ in range(3)]
    small = [torch.randn(8) for _ in range(reduce.MANY_SMALL)]
    ts = [large[0], *small[:10], large[1], *small[10:], large[2]]
    ts[1][0] = float("nan")
    ts[11][5] = float("inf")  # a large one
    flattened: list[int] = []
    segments = reduce._segments

    def spy(tensors, dtype, op):
        flattened.extend(t.numel() for t in tensors)
        return segments(tensors, dtype, op)

    monkeypatch.setattr(reduce, "_segments", spy)
    want = torch.stack([torch.linalg.vector_norm(t.double()).float() for t in ts])
    assert torch.allclose(reduce.norm_vector(ts), want, equal_nan=True)
    assert torch.allclose(torch.stack(reduce.norms(ts)), want, equal_nan=True)
    per_tensor = torch.stack([t.sum(dtype=torch.float32) for t in ts])
    assert torch.allclose(reduce.finite_sentinels(ts), per_tensor, equal_nan=True, rtol=1e-4, atol=1e-4)
    assert flattened and max(flattened) <= reduce.SMALL_NUMEL


def test_a_model_of_large_tensors_is_not_flattened(monkeypatch):
    import torch

    from torch_audit.runtime import reduce

    ts = [torch.randn(reduce.SMALL_NUMEL * 2) for _ in range(reduce.MANY_SMALL + 5)]
    assert reduce._small_on_cpu(ts) is None

    def refuse(*args, **kwargs):
        raise AssertionError("flattened")

    monkeypatch.setattr(reduce, "_segments", refuse)
    want = torch.stack([torch.linalg.vector_norm(t) for t in ts])
    assert torch.allclose(reduce.norm_vector(ts), want)
    assert reduce.finite_sentinels(ts).isfinite().all()
