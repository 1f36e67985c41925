"""The reductions the runtime checks run on every step: one small float32 tensor per list of
tensors, computed on the tensors' device and read later with the step's other flags.

Both work in float32 whatever the input dtype: a float16 tensor's own L2 norm overflows at
65504, which two million activations of 50 exceed, so a norm in the input's dtype would turn a
healthy AMP step into a "non-finite" finding.
"""

from __future__ import annotations

import contextlib

import torch

from torch_audit.runtime.dist import PLAIN_TYPES

#: From this many small tensors on the CPU, flattening them into one buffer and reducing it by
#: segments beats ``torch._foreach_norm`` / a sum per tensor, which on the CPU run one small
#: kernel per tensor (5,000 ``Linear(4, 4)`` gradients: 22 ms against 10 ms).
MANY_SMALL = 64

#: Small enough to flatten: a larger tensor is reduced where it is, since flattening copies it
#: (in float64 for the norms). Flattening every tensor of a model with 100 parameter tensors and
#: 5M parameters cost 50 ms a step for the gradient norms, against 1.4 ms for one
#: ``_foreach_norm``.
SMALL_NUMEL = 4096


def _small_on_cpu(tensors: list[torch.Tensor]) -> tuple[list[int], list[int]] | None:
    """``(small, large)`` indices when every tensor is a plain dense CPU tensor and at least
    ``MANY_SMALL`` of them have at most ``SMALL_NUMEL`` elements; None otherwise."""
    if len(tensors) < MANY_SMALL:
        return None
    small: list[int] = []
    large: list[int] = []
    for i, t in enumerate(tensors):
        # is_cpu/is_sparse are cheap flags; t.device and t.layout build objects (20 ms for
        # 5,000 tensors against 3 ms). A layout the flattening cannot take raises: the callers
        # fall back.
        if type(t) not in PLAIN_TYPES or not t.is_cpu or t.is_sparse:
            return None
        (small if t.numel() <= SMALL_NUMEL else large).append(i)
    return (small, large) if len(small) >= MANY_SMALL else None


def _segments(tensors: list[torch.Tensor], dtype: torch.dtype, op) -> torch.Tensor:
    """``op(flat, lengths)`` over the tensors flattened into one ``dtype`` buffer, one group per
    input dtype (the flattening concatenates one dtype at a time), in input order."""
    out = torch.empty(len(tensors), dtype=dtype)
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, []).append(i)
    with torch.no_grad():  # no graph, so no per-tensor detach() (which costs as much as a sum)
        for idx in groups.values():
            part = [tensors[i] for i in idx]
            flat = torch._utils._flatten_dense_tensors(part).to(dtype)
            lengths = torch.tensor([t.numel() for t in part])
            out[idx] = op(flat, lengths)
    return out


def _small_by_segments(tensors: list[torch.Tensor], split: tuple[list[int], list[int]],
                       segmented, each) -> torch.Tensor:
    """One float32 value per tensor: ``segmented`` over the small ones, ``each`` over the rest
    (both give a float32 vector for the tensors they get)."""
    small, large = split
    if not large:
        return segmented(tensors)
    out = torch.empty(len(tensors), dtype=torch.float32)
    out[small] = segmented([tensors[i] for i in small])
    out[large] = each([tensors[i] for i in large])
    return out


def _segment_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    # squares in float64: an element above 1.8e19 must not overflow a finite float32 norm
    return _segments(tensors, torch.float64, lambda flat, lengths: torch.segment_reduce(
        flat.square(), "sum", lengths=lengths, unsafe=True, initial=0).sqrt()).float()


def _norms_vector(tensors: list[torch.Tensor], split: tuple[list[int], list[int]]) -> torch.Tensor:
    return _small_by_segments(tensors, split, _segment_norms,
                              lambda part: torch.stack(_norms_each(part)))


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-tensor L2 norms as float32 scalars, in input order: float16/bfloat16 tensors reduced
    in float32, the others in their own precision (float64 cannot be narrowed inside the
    kernel), each group with one fused ``torch._foreach_norm``; many small CPU tensors at once
    with one segment reduction (in float64) instead."""
    split = _small_on_cpu(tensors)
    if split is not None:
        with contextlib.suppress(RuntimeError):  # an unusual layout: the per-tensor path
            return list(_norms_vector(tensors, split).unbind())
    return _norms_each(tensors)


def _norms_each(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
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


def norm_vector(tensors: list[torch.Tensor]) -> torch.Tensor:
    """:func:`norms` as one float32 vector on the first tensor's device (no per-tensor
    scalars to stack when the segment reduction applies)."""
    split = _small_on_cpu(tensors)
    if split is not None:
        with contextlib.suppress(RuntimeError):  # an unusual layout: the per-tensor path
            return _norms_vector(tensors, split)
    parts = norms(tensors)
    device = parts[0].device
    return torch.stack([n if n.device == device else n.to(device) for n in parts])


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
    From ``MANY_SMALL`` small CPU tensors the same float32 sums by one segment reduction.
    """
    split = _small_on_cpu(tensors)
    if split is not None:
        with contextlib.suppress(RuntimeError):  # an unusual layout: the per-tensor path
            return _small_by_segments(tensors, split, _segment_sums, _sums_each)
    if all(t.device.type == "cpu" for t in tensors):
        return _sums_each(tensors)
    return torch.stack([n.to(tensors[0].device) for n in norms(tensors)])


def _segment_sums(tensors: list[torch.Tensor]) -> torch.Tensor:
    return _segments(tensors, torch.float32, lambda flat, lengths: torch.segment_reduce(
        flat, "sum", lengths=lengths, unsafe=True, initial=0))


def _sums_each(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.sum(dtype=torch.float32) for t in tensors])
