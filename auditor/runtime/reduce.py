"""The reductions the runtime checks run on every step: one small float32 tensor per list of
tensors, computed on the tensors' device and read later with the step's other flags.

Both work in float32 whatever the input dtype: a float16 tensor's own L2 norm overflows at
65504, which two million activations of 50 exceed, so a norm in the input's dtype would turn a
healthy AMP step into a "non-finite" finding.
"""

from __future__ import annotations

import torch


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor L2 norms as float32 scalars, in input order: float16/bfloat16 tensors reduced
    in float32, the others in their own precision (float64 cannot be narrowed inside the
    kernel), each group with one fused ``torch._foreach_norm``."""
    low = [i for i, t in enumerate(tensors) if t.element_size() < 4]
    if not low:
        return [n.float() for n in torch._foreach_norm(tensors)]
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for i, n in zip(low, _norms_float32([tensors[i] for i in low])):
        out[i] = n
    wide = [i for i, t in enumerate(tensors) if t.element_size() >= 4]
    if wide:
        for i, n in zip(wide, torch._foreach_norm([tensors[i] for i in wide])):
            out[i] = n.float()
    return out  # type: ignore[return-value]


def _norms_float32(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    try:
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except (TypeError, RuntimeError):  # pragma: no cover - a torch without the dtype overload
        return [torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]


def finite_sentinels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One float32 per tensor that is non-finite when the tensor holds a NaN or an infinity.

    On CPU a float32 sum per tensor: NaN and ±inf propagate through it, it reads the data once
    without squaring (a quarter faster than ``torch._foreach_norm`` there) and it overflows only
    when the values add up past 3e38, where an L2 norm overflows from 1e19. On other devices one
    fused ``torch._foreach_norm``, which launches a few kernels instead of one per tensor.
    """
    if all(t.device.type == "cpu" for t in tensors):
        return torch.stack([t.sum(dtype=torch.float32) for t in tensors])
    return torch.stack([n.to(tensors[0].device) for n in norms(tensors)])
