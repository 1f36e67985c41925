"""A session replaces no public torch object (issue 19, item 1).

``nn.TransformerEncoderLayer`` stores ``F.relu`` and compares it by identity to pick its fast
path; ``torch.save(model)`` pickles it by qualified name. A wrapper in its place broke both.
The session observes ``backward()`` and the loss functions through a torch function mode that
is on the stack only between a forward's end and ``backward()`` (see
``auditor/runtime/intercept.py``), never during a forward.
"""

from __future__ import annotations

import io
import types

import torch
import torch.nn.functional as F
from torch import nn

import torch_audit


def _public_callables() -> dict[str, int]:
    """Identity of every public callable the session could conceivably touch."""
    owners = {
        "torch": torch,
        "torch.nn.functional": F,
        "torch.autograd": torch.autograd,
        "torch.Tensor": torch.Tensor,
        "torch.nn.Module": nn.Module,
        "torch.optim.Optimizer": torch.optim.Optimizer,
        "torch.optim.SGD": torch.optim.SGD,
        "torch.nn.utils": torch.nn.utils,
    }
    out = {}
    for owner_name, owner in owners.items():
        space = vars(owner) if isinstance(owner, type) else owner.__dict__
        for name, value in list(space.items()):
            if name.startswith("__") or isinstance(value, types.ModuleType):
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                out[f"{owner_name}.{name}"] = id(value)
    return out


def _train_steps(model, x, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]),
                               torch.zeros(out.shape[0] * out.shape[1], dtype=torch.long))
        loss.backward()
        opt.step()
    return model


def test_transformer_layer_built_and_saved_in_a_session_pickles():
    with torch_audit.audit(preview=True) as session:
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        _train_steps(layer, torch.randn(4, 5, 16))
        buf = io.BytesIO()
        torch.save(layer, buf)  # PicklingError when F.relu was a wrapper
        layer(torch.randn(2, 5, 16))
        torch.save(layer, io.BytesIO())  # also with the call window open
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.activation is F.relu
    assert session.findings == [], session.report()


def test_activation_relu_or_gelu_is_unchanged_in_a_session():
    plain = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).activation_relu_or_gelu
    with torch_audit.audit(preview=True):
        inside = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        _train_steps(inside, torch.randn(4, 5, 16))
    assert plain == 1
    assert inside.activation_relu_or_gelu == plain


def test_public_callables_keep_their_identity_during_a_session():
    before = _public_callables()
    relu = F.relu
    with torch_audit.audit(preview=True, select=["ALL"]):
        assert F.relu is relu
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(4, 2, 8)
        _train_steps(model, x)
        assert _public_callables() == before
        model(x)  # the call window is open now
        assert _public_callables() == before
        assert F.relu is relu
    assert _public_callables() == before


def test_forwards_run_without_a_torch_function_mode():
    """The fast paths (native transformer, MultiheadAttention) check has_torch_function: no
    mode of the session may be on the stack while any module's forward runs."""
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch._C._len_torch_function_stack())
            return x * 2

    model = nn.Sequential(nn.Linear(4, 4), Probe())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(preview=True, select=["ALL"]):
        for _ in range(3):
            out = model(torch.randn(2, 4))
            model(torch.randn(2, 4))  # a second forward inside the window
            out.sum().backward()
            opt.step()
            opt.zero_grad()
    assert seen and set(seen) == {0}


def test_backward_and_losses_are_still_seen():
    model = nn.Sequential(nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit(preview=True) as session:
        for step in range(3):
            opt.zero_grad()
            out = model(torch.randn(8, 4))
            loss = F.cross_entropy(out.softmax(-1), torch.randint(0, 3, (8,)))
            if step == 2:
                loss = loss * float("nan")
            torch.autograd.backward(loss) if step else loss.backward()
            opt.step()
    assert {"TA701", "TA707"} <= set(session.codes), session.report()


def test_a_user_mode_entered_after_a_forward_keeps_working():
    """Our mode is never left above a user's: the user's block pops its own mode."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    model = nn.Linear(4, 1)
    with torch_audit.audit(preview=True):
        model(torch.randn(2, 4))  # window open
        with Count():
            model(torch.randn(2, 4)).sum().backward()
        assert torch._C._len_torch_function_stack() <= 1
        with torch.device("meta"):
            probe = model.to("meta")(torch.randn(2, 4))
        assert probe.device.type == "meta"
        assert torch.empty(1).device.type == "cpu"
    assert Count.calls > 0
    assert torch._C._len_torch_function_stack() == 0


def test_the_window_works_over_a_default_device():
    """``torch.set_default_device`` keeps its mode at the bottom of the stack: the window opens
    above it, and changing the default device inside the session keeps both working."""
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.set_default_device("cpu")
    try:
        with torch_audit.audit(preview=True) as session:
            out = model(torch.randn(2, 4))
            torch.set_default_device("meta")
            assert torch.empty(1).device.type == "meta"
            torch.set_default_device("cpu")
            (F.cross_entropy(out, torch.tensor([0, 1])) * float("nan")).backward()
            opt.step()
    finally:
        torch.set_default_device(None)
    assert torch.empty(1).device.type == "cpu"
    assert torch._C._len_torch_function_stack() == 0
    assert "TA701" in session.codes, session.report()
