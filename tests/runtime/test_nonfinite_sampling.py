"""nonfinite-activation watches every training pass of a warm-up, then one pass in
``sample_every`` (drawn), and every pass once a non-finite loss, gradient or parameter was found:
a non-finite value that first shows on an unwatched pass is reported by the loss and gradient
checks, and located by this one when it recurs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.rules.runtime.nonfinite_activation import NonFiniteActivation


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x, poison=False):
        h = self.fc1(x)
        if poison:
            h = h * float("nan")  # made in the forward, between fc1 and act
        return self.fc2(self.act(h))


def _train(passes, *, poison_at=(), **options):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch_audit.audit(config=False, nonfinite_activation=options) as session:
        for i in range(passes):
            opt.zero_grad()
            loss = F.cross_entropy(model(torch.randn(8, 4), poison=i in poison_at),
                                   torch.randint(0, 3, (8,)))
            loss.backward()
            if i not in poison_at:  # a guarded loop: the bad step is skipped, nothing poisoned
                opt.step()
    return session


def _watched_passes(monkeypatch, passes, **options):
    """How many training passes nonfinite-activation read."""
    reads = []
    original = NonFiniteActivation.on_backward

    def on_backward(self, event):
        reads.append(bool(self._r_modules))
        return original(self, event)

    monkeypatch.setattr(NonFiniteActivation, "on_backward", on_backward)
    _train(passes, **options)
    return sum(reads)


def test_the_warm_up_passes_are_all_watched(monkeypatch):
    assert _watched_passes(monkeypatch, 12, warmup=12, sample_every=4) == 12


def test_after_the_warm_up_about_one_pass_in_n_is_watched(monkeypatch):
    watched = _watched_passes(monkeypatch, 204, warmup=4, sample_every=4)
    assert 4 + 25 < watched < 4 + 80  # 200 draws of 1 in 4: 50 expected


def test_sample_every_1_watches_every_pass(monkeypatch):
    assert _watched_passes(monkeypatch, 40, warmup=0, sample_every=1) == 40


def test_a_value_made_on_a_watched_pass_is_located():
    session = _train(10, poison_at={5}, warmup=16)
    assert "TA704" in session.codes, session.report()
    assert "between fc1" in next(f for f in session.findings if f.code == "TA704").message


def test_a_value_first_made_on_an_unwatched_pass_is_located_when_it_recurs():
    # no pass is drawn after the warm-up (1 in 10**9); the first poisoned pass is unwatched,
    # its loss is reported, and every pass is watched from then on
    session = _train(40, poison_at={20, 30}, warmup=4, sample_every=10 ** 9)
    located = [f for f in session.findings if f.code == "TA704"]
    assert "TA701" in session.codes, session.report()
    assert len(located) == 1 and "between fc1" in located[0].message
    first_loss = min(f.step for f in session.findings if f.code == "TA701")
    assert located[0].step > first_loss  # the recurrence, not the first occurrence


def test_alternating_kinds_of_passes_are_both_watched():
    """A GAN's discriminator and generator passes alternate: a watch on every N-th pass with N
    even would never see one of them."""
    torch.manual_seed(0)
    a, b = nn.Linear(4, 1), nn.Linear(4, 1)
    seen = {"a": 0, "b": 0}
    with torch_audit.audit(config=False, nonfinite_activation={"warmup": 0, "sample_every": 2}) as session:
        [check] = [c for c in session.checks if c.name == "nonfinite-activation"]
        for i in range(200):
            name, model = ("a", a) if i % 2 == 0 else ("b", b)
            out = model(torch.randn(8, 4))
            seen[name] += check._watching
            out.sum().backward()
    assert seen["a"] > 20 and seen["b"] > 20, seen
