"""nonfinite-activation names the first module whose output went non-finite.

The sentinel reads each output once, as it is produced, and skips outputs that cannot be
non-finite unless their input was (``torch_audit.runtime.finite_preserving``). Every scenario here is
run twice, with the skipping and with every output read, and must name the same module: the
skipping is an optimisation that may never change what is reported.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime import check_helpers as transparent


def _first_nonfinite(model: nn.Module, x: torch.Tensor, *, steps: int = 1) -> list[str]:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    with torch_audit.audit(model, select=["nonfinite-activation"], config=False) as session:
        for _ in range(steps):
            opt.zero_grad()
            model(x).float().sum().backward()
            opt.step()
    return [f.module for f in session.findings]


@pytest.fixture(params=["skipping", "every-output"])
def reads(request, monkeypatch):
    if request.param == "every-output":
        monkeypatch.setattr(transparent, "parameters_to_read", lambda module, output: None)
    return request.param


class Log(nn.Module):
    """A user module whose log turns zeros into -inf."""

    def forward(self, x):
        return torch.log(x)


class LogThenDropout(nn.Module):
    """The non-finite value comes from a functional call between two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.log(self.lin(x) - 100.0))


class InPlaceAfterReturn(nn.Module):
    """An output divided by zero in place after its module returned, then an activation."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.act = nn.ReLU(inplace=inplace)

    def forward(self, x):
        y = self.bn(self.lin(x))
        y.div_(0.0)
        return self.act(y)


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (torch.full_like(x, 60000.0) * self.w).half()


class HalfOverflow(nn.Module):
    """Dropout scales a float16 value of 60000 by 2: past float16's 65504."""

    def __init__(self) -> None:
        super().__init__()
        self.source = Big()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.source(x))


def _conv_bn(weight_nan: str | None = None, eval_bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2))
    with torch.no_grad():
        if weight_nan == "conv":
            model[0].weight[0, 0, 0, 0] = float("nan")
        elif weight_nan == "bn":
            model[1].weight[1] = float("nan")
    if eval_bn:
        model[1].eval()
        model[1].running_var[2] = float("nan")
    return model


def test_nan_from_a_convolution_is_named_there_not_in_the_batchnorm_after_it(reads):
    assert _first_nonfinite(_conv_bn("conv"), torch.randn(2, 3, 8, 8)) == ["0"]


def test_nan_in_a_batchnorm_weight_is_named_in_the_batchnorm(reads):
    assert _first_nonfinite(_conv_bn("bn"), torch.randn(2, 3, 8, 8)) == ["1"]


def test_batchnorm_in_eval_mode_with_poisoned_running_statistics_is_named(reads):
    assert _first_nonfinite(_conv_bn(eval_bn=True), torch.randn(2, 3, 8, 8)) == ["1"]


def _findings(model: nn.Module, x: torch.Tensor):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    with torch_audit.audit(model, select=["nonfinite-activation"], config=False) as session:
        opt.zero_grad()
        model(x).float().sum().backward()
        opt.step()
    return session.findings


def _line(cls: type, text: str) -> int:
    import inspect

    lines, first = inspect.getsourcelines(cls.forward)
    return first + next(i for i, line in enumerate(lines) if text in line)


def test_a_functional_nan_between_modules_is_blamed_on_the_code_between_them(reads):
    # issue 19 item 4: Dropout cannot make a NaN from finite input; the log in the parent's
    # forward, between `lin` (finite) and `drop`, did
    torch.manual_seed(0)
    [finding] = _findings(LogThenDropout(), torch.randn(8, 4))
    assert finding.module == "LogThenDropout"  # the module whose forward holds that code
    assert "between lin" in finding.message and "drop" in finding.message, finding.message
    assert "Dropout" in finding.message
    assert finding.path.endswith("test_nonfinite_activation.py")
    assert finding.line == _line(LogThenDropout, "return self.drop(torch.log(")


class SharedActivation(nn.Module):
    """One ReLU module called twice; the NaN comes between the two calls."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.lin(x))
        h = torch.log(h - 10.0)
        return self.act(h)


def test_a_shared_module_is_named_at_the_call_that_received_the_nan(reads):
    torch.manual_seed(0)
    [finding] = _findings(SharedActivation(), torch.randn(8, 4))
    assert finding.line == _line(SharedActivation, "return self.act(h)"), finding
    # the last finite output was act's first call, on its own line
    assert f"line {_line(SharedActivation, 'h = self.act(self.lin(x))')}" in finding.message


def test_a_module_that_makes_the_nan_itself_is_still_named(reads):
    # Log is a user module: it can make non-finite values from finite input
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Log(), nn.Dropout(0.1), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.zero_()
    [finding] = _findings(model, torch.rand(8, 4))
    assert finding.module == "2" and "between" not in finding.message


@pytest.mark.parametrize("inplace", [False, True])
def test_an_output_changed_in_place_after_its_module_returned_is_read_again(reads, inplace):
    # the ReLU received the NaN; it was made by the `y.div_(0.0)` between `bn` and `act`
    torch.manual_seed(0)
    [finding] = _findings(InPlaceAfterReturn(inplace), torch.randn(8, 4))
    assert finding.module == "InPlaceAfterReturn"
    assert "between bn" in finding.message and "act" in finding.message, finding.message


def test_float16_outputs_are_read_even_after_a_transparent_module(reads):
    torch.manual_seed(0)
    assert _first_nonfinite(HalfOverflow(), torch.randn(8, 4)) == ["drop"]


@pytest.mark.parametrize("eps,expected", [(0.0, ["1"]), (1e-5, [])])
def test_layernorm_without_eps_dividing_a_constant_row_by_zero(reads, eps, expected):
    lin = nn.Linear(4, 6)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(2.0)
    model = nn.Sequential(lin, nn.LayerNorm(6, eps=eps), nn.Linear(6, 1))
    assert _first_nonfinite(model, torch.randn(8, 4)) == expected


def test_log_of_a_relu_names_the_user_module(reads):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Log(), nn.Dropout(0.1), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.zero_()
    assert _first_nonfinite(model, torch.rand(8, 4)) == ["2"]


def test_healthy_training_with_every_transparent_layer_is_silent(reads):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Dropout2d(0.1), nn.GroupNorm(2, 8), nn.GELU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
        nn.LayerNorm(16), nn.SiLU(), nn.Dropout(0.2), nn.Identity(), nn.Linear(16, 2),
    )
    assert _first_nonfinite(model, torch.randn(4, 3, 8, 8), steps=3) == []


def test_transparent_modules_are_exact_classes_with_their_conditions():
    out = torch.zeros(1)
    assert transparent.parameters_to_read(nn.ReLU(), out) == ()
    assert transparent.parameters_to_read(nn.Dropout(), out.half()) is None
    assert transparent.parameters_to_read(nn.LeakyReLU(2.0), out) is None
    assert transparent.parameters_to_read(nn.LayerNorm(3, eps=0.0), out) is None
    bn = nn.BatchNorm2d(3)
    assert len(transparent.parameters_to_read(bn, out)) == 2
    assert transparent.parameters_to_read(bn.eval(), out) is None
    assert transparent.parameters_to_read(nn.BatchNorm2d(3, affine=False), out) == ()

    class MyReLU(nn.ReLU):  # a subclass may do anything in forward
        pass

    assert transparent.parameters_to_read(MyReLU(), out) is None
    assert transparent.parameters_to_read(nn.SyncBatchNorm(3), out) is None


# -- property: random stacks of layers, a non-finite value planted anywhere ---------------------

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Plant(nn.Module):
    """A user layer that returns a copy with one NaN: the first non-finite output by construction."""

    def forward(self, x):
        y = x.clone()
        y.view(-1)[0] = float("nan")
        return y


class Chain(nn.Module):
    """Runs ``layers`` in order and, before layer ``at``, plants a non-finite value: with a
    ``Plant`` layer ("module"), with a functional copy ("new"), or in place on the previous
    layer's output ("inplace"), which the sentinel read before the change."""

    def __init__(self, layers: list[nn.Module], at: int, how: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.at, self.how = at, how
        self.plant = Plant()

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            if i == self.at:
                if self.how == "module":
                    x = self.plant(x)
                elif self.how == "new":
                    x = x.clone()
                    x.view(-1)[0] = float("nan")
                else:
                    x.view(-1)[0] = float("nan")
            x = layer(x)
        return x


def _layer(kind: str, width: int) -> nn.Module:
    return {
        "linear": lambda: nn.Linear(width, width),
        "relu": lambda: nn.ReLU(),
        "relu_": lambda: nn.ReLU(inplace=True),
        "gelu": lambda: nn.GELU(),
        "dropout": lambda: nn.Dropout(0.3),
        "dropout_": lambda: nn.Dropout(0.3, inplace=True),
        "bn": lambda: nn.BatchNorm1d(width),
        "ln": lambda: nn.LayerNorm(width),
        "identity": lambda: nn.Identity(),
        "tanh": lambda: nn.Tanh(),
        "seq": lambda: nn.Sequential(nn.Linear(width, width), nn.ReLU()),
    }[kind]()


KINDS = ["linear", "relu", "relu_", "gelu", "dropout", "dropout_", "bn", "ln", "identity", "tanh",
         "seq"]


def _chain(kinds, at, how) -> Chain:
    torch.manual_seed(0)
    return Chain([nn.Linear(6, 6)] + [_layer(k, 6) for k in kinds], at, how)


def _trains(model: nn.Module) -> bool:
    """Whether plain autograd accepts the model (an in-place change of a tensor saved for
    backward is an error there)."""
    try:
        model(torch.randn(5, 6)).sum().backward()
    except RuntimeError:
        return False
    return True


@settings(max_examples=80, deadline=None)
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6), data=st.data(),
       how=st.sampled_from(["module", "new", "inplace"]))
def test_skipping_never_changes_the_module_named(kinds, data, how):
    at = data.draw(st.integers(min_value=1, max_value=len(kinds)))
    assume(_trains(_chain(kinds, at, how)))
    named = []
    original = transparent.parameters_to_read
    for skipping in (True, False):
        if not skipping:
            transparent.parameters_to_read = lambda module, output: None
        try:
            named.append(_first_nonfinite(_chain(kinds, at, how), torch.randn(5, 6)))
        finally:
            transparent.parameters_to_read = original
    assert named[0] == named[1]
    if how == "module":
        assert named[0] == ["plant"]
    else:  # NaN propagates through every layer listed: someone must be named
        assert len(named[0]) == 1


def test_backwards_without_optimizer_steps_hold_bounded_memory():
    # a hand-written update (no optimizer.step()): the flags of every backward were kept until
    # the session ended
    from torch_audit.runtime.deferred_reads import MAX_PENDING

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch_audit.audit(model, select=["nonfinite-activation"], config=False) as session:
        for i in range(200):
            x = torch.randn(8, 4) if i != 150 else torch.full((8, 4), float("nan"))
            model(x).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.0 * p.grad
                    p.grad = None
            assert session.pending_reads < MAX_PENDING
    assert [f.module for f in session.findings] == ["0"]
    assert session.findings[0].step == 0  # no optimizer step was ever taken
