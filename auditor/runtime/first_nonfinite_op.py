"""Precise localisation of the first non-finite operation: a TorchDispatchMode that runs during
one forward pass (armed after the cheap sentinel fired) and checks every operator's outputs.
It synchronises on every op, which is why it only ever runs for a single forward pass."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from torch_audit.runtime.source import user_site


def _floats(obj) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.numel())


class FirstNonFiniteOp(TorchDispatchMode):
    """Records the first aten op whose inputs are finite and whose outputs are not."""

    def __init__(self) -> None:
        super().__init__()
        self.found: tuple[str, tuple[str, int] | None] | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.found is None:
            outs = _floats(out)
            if outs and not _all_finite(outs) and _all_finite(_floats((args, kwargs))):
                self.found = (str(func.overloadpacket.__name__), user_site())
        return out
