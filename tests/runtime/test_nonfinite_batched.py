"""nonfinite-activation reads small outputs in batches (issue 19's LBFGS cost).

A module's first outputs are read when it returns and watched; from then on its small outputs
are held and reduced together at the end of the forward pass (or every ``MAX_PENDING``). These
tests train a finite first step, so that every module is batched, and plant the non-finite
value in a later step: the module named, its call line, and the memory held must be what the
read-at-return path gives.
"""

from __future__ import annotations

import gc
import inspect
import weakref

import torch
from torch import nn

import torch_audit
from torch_audit.rules.runtime import nonfinite_activation as na


def _line(cls: type, text: str) -> int:
    lines, first = inspect.getsourcelines(cls.forward)
    return first + next(i for i, line in enumerate(lines) if text in line)


def _train(model: nn.Module, x: torch.Tensor, steps: int = 3, *, check=None):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    with torch_audit.audit(model, select=["nonfinite-activation"], config=False) as session:
        [check_] = session.checks
        for step in range(steps):
            model.step = step
            opt.zero_grad()
            model(x).float().sum().backward()
            if check is not None:
                check(check_, step)
            opt.step()
    return session.findings


class InPlaceLater(nn.Module):
    """`y.div_(d)` after `bn` returned: d is 1 until step 2, then 0."""

    step = 0

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.bn(self.lin(x))
        y.div_(0.0 if self.step == 2 else 1.0)
        return self.act(y)


def test_an_output_changed_in_place_after_the_call_is_attributed_as_when_read_at_return(monkeypatch):
    # every output read (no finite-preserving skipping): bn's own output is watched in step 0,
    # seen changed in place, and read at return from then on
    from torch_audit.runtime import check_helpers

    monkeypatch.setattr(check_helpers, "parameters_to_read", lambda module, output: None)
    torch.manual_seed(0)
    [finding] = _train(InPlaceLater(), torch.randn(8, 4))
    assert finding.step == 2
    assert finding.module == "InPlaceLater"
    assert "between bn" in finding.message and "act" in finding.message, finding.message


class SharedCell(nn.Module):
    """One Linear called 150 times at one line (more than a batch holds) and once at another,
    where a log of a negative value comes in at step 2."""

    step = 0

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(6, 6)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        h = x
        for _ in range(150):
            h = torch.tanh(self.cell(h))
        bad = torch.log(h - 2.0) if self.step == 2 else h
        h = self.cell(bad)
        return self.head(h)


def test_a_module_called_many_times_is_named_at_the_call_that_went_non_finite():
    torch.manual_seed(0)
    [finding] = _train(SharedCell(), torch.randn(4, 6))
    assert finding.step == 2 and finding.module == "cell", finding
    assert finding.line == _line(SharedCell, "h = self.cell(bad)"), finding


def test_small_outputs_are_batched_after_the_first_step_and_not_held_past_the_forward():
    torch.manual_seed(0)
    refs = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.act = nn.ReLU()  # saves its result, not its input: lin's output is freed
            self.out = nn.Linear(4, 1)

        def forward(self, x):
            h = self.lin(x)
            refs.append(weakref.ref(h))
            return self.out(self.act(h))

    model = Probe()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with torch_audit.audit(model, select=["nonfinite-activation"], config=False) as session:
        [check] = session.checks
        for step in range(3):
            opt.zero_grad()
            y = model(torch.randn(8, 4))
            gc.collect()
            assert refs[-1]() is None, "an output autograd does not keep was kept by the check"
            assert not check._p_tensors and not check._watched
            if step:  # learned in step 0: nothing read at return any more
                assert not check._eager and check._parts
            y.sum().backward()
            opt.step()
    assert session.findings == []


class BigThenSmall(nn.Module):
    """A large output (read at return) between small ones (batched): the flags come in two
    orders, and are put back in call order."""

    step = 0

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.big = nn.Linear(4, na.SMALL)  # 8 x SMALL values: read at return
        self.b = nn.Linear(na.SMALL, 4)
        self.c = nn.Linear(4, 4)

    def forward(self, x):
        h = self.big(self.a(x))
        h = self.b(h)
        if self.step == 2:
            h = h / 0.0 - h / 0.0
        return self.c(h)


def test_outputs_read_at_return_and_batched_ones_keep_the_call_order():
    torch.manual_seed(0)
    [finding] = _train(BigThenSmall(), torch.randn(8, 4))
    assert finding.step == 2
    assert finding.module == "c", finding


def test_a_non_finite_large_output_is_named_before_later_batched_ones():
    torch.manual_seed(0)
    model = BigThenSmall()

    def poison(check, step):
        if step == 1:
            with torch.no_grad():
                model.big.bias[0] = float("nan")

    [finding] = _train(model, torch.randn(8, 4), check=poison)
    assert finding.step == 2 and finding.module == "big", finding


def test_call_sites_are_resolved_to_the_line_of_the_call():
    # the site is kept as (code, offset) and turned into a line only for a finding
    import sys

    def where():
        frame = sys._getframe(1)
        return (frame.f_code, frame.f_lasti), frame.f_lineno

    raw, line = where()
    assert na.NonFiniteActivation._site(raw) == (__file__, line)


class InPlaceOnlyLate(nn.Module):
    """The change in place starts in step 2: `bn` and `lin` were batched by then."""

    step = 0

    def __init__(self, after: str) -> None:
        super().__init__()
        self.after = after
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.lin(x)
        if self.after == "lin" and self.step == 2:
            y.div_(0.0)
        y = self.bn(y)
        if self.after == "bn" and self.step == 2:
            y.div_(0.0)
        return self.act(y)


def test_a_finite_preserving_module_whose_batched_output_was_changed_is_not_blamed(monkeypatch):
    from torch_audit.runtime import check_helpers

    monkeypatch.setattr(check_helpers, "parameters_to_read", lambda module, output: None)
    torch.manual_seed(0)
    [finding] = _train(InPlaceOnlyLate("bn"), torch.randn(8, 4))
    assert finding.step == 2 and finding.module == "InPlaceOnlyLate"
    assert "between bn" in finding.message and "act" in finding.message, finding.message


def test_a_module_whose_batched_output_was_changed_is_named_with_that_caveat():
    torch.manual_seed(0)
    [finding] = _train(InPlaceOnlyLate("lin"), torch.randn(8, 4))
    assert finding.step == 2 and finding.module == "lin", finding
    assert "changed in place after the call" in finding.message, finding.message


def test_batch_sums_are_float32_per_tensor_in_any_mix_of_shapes_and_dtypes():
    half = torch.full((4,), 60000.0, dtype=torch.float16)  # sums past float16's 65504
    tensors = (torch.ones(2, 3, dtype=torch.float16), torch.ones(2, 3), half,
               torch.full((4,), float("nan"), dtype=torch.bfloat16), half, torch.ones(5))
    with torch.no_grad():
        parts = na._batch_sums(torch, tensors)
    values = {}
    for sums, positions in parts:
        assert sums.dtype == torch.float32
        values.update(zip(positions, sums.tolist()))
    assert sorted(values) == list(range(len(tensors)))
    assert [values[i] for i in (0, 1, 2, 4, 5)] == [6.0, 6.0, 240000.0, 240000.0, 5.0]
    assert values[3] != values[3]  # NaN
