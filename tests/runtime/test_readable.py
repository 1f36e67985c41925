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
