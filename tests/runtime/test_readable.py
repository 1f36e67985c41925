"""Which deferred tensors are read: plain tensors and parameters, not meta or fake ones, also
when a fake one hides inside a functionalization wrapper of a plain class."""

from __future__ import annotations

import torch

from torch_audit.runtime.deferred_reads import readable


def test_plain_tensors_and_parameters_are_read_as_they_are():
    t = torch.ones(3)
    p = torch.nn.Parameter(torch.ones(2))
    assert readable(t) is t
    assert readable(p) is p


def test_meta_and_fake_tensors_are_skipped():
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert readable(torch.empty(3, device="meta")) is None
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.ones(3))
    assert readable(fake) is None


def test_a_fake_tensor_inside_a_functional_wrapper_is_skipped():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.ones(3))
        wrapped = torch._to_functional_tensor(fake)
    assert type(wrapped) is torch.Tensor  # a plain class: the fast path must not take it
    assert readable(wrapped) is None


def test_losses_and_vectors_in_any_order_reach_their_own_callbacks():
    from torch_audit.runtime.deferred_reads import DeferredReads

    got: dict[str, list[float]] = {}

    def keep(name):
        return lambda values: got.__setitem__(name, values)

    reads = DeferredReads(lambda owner, cb, values: cb(values), lambda *a: None, lambda: None, late=False)
    graded = torch.tensor(5.0, requires_grad=True) * 1  # a 0-d tensor in a graph
    deferred = [
        ("flags", torch.tensor([1.0, 2.0, 3.0])),
        ("loss1", torch.tensor(0.5)),
        ("double", torch.tensor(2.5, dtype=torch.float64)),
        ("loss2", torch.tensor(float("nan"))),
        ("graded", graded),
        ("matrix", torch.arange(4.0).reshape(2, 2)),
        ("loss3", torch.tensor(7.0)),
    ]
    for name, t in deferred:
        reads.defer(None, t, keep(name))
    reads.read()
    assert got["flags"] == [1.0, 2.0, 3.0]
    assert got["loss1"] == [0.5] and got["loss3"] == [7.0]
    assert got["loss2"][0] != got["loss2"][0]  # NaN
    assert got["double"] == [2.5] and got["graded"] == [5.0]
    assert got["matrix"] == [0.0, 1.0, 2.0, 3.0]
