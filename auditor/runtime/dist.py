"""torch.distributed helpers. Every function that communicates is called symmetrically: on every
rank, at the same point, with tensors of the same shape, whatever that rank has seen."""

from __future__ import annotations

from typing import Any

import torch


def active() -> bool:
    d = torch.distributed
    return d.is_available() and d.is_initialized() and d.get_world_size() > 1


def rank() -> int | None:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank()
    return None


def world_size() -> int:
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_world_size()
    return 1


def is_sharded(param: torch.Tensor) -> bool:
    """True for parameters whose local tensor is one shard of the whole (FSDP)."""
    try:
        from torch.distributed.tensor import DTensor
    except Exception:  # pragma: no cover - old torch
        DTensor = ()  # type: ignore[assignment]
    if DTensor and isinstance(param, DTensor):
        return any(not p.is_replicate() for p in param.placements)
    # FSDP1's FlatParameter holds this rank's shard of many original parameters
    return type(param).__name__ == "FlatParameter"


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, or ``t`` itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks with the default process group; returns a tensor on ``t``'s device."""
    dev = collective_device()
    buf = t.detach().to(dev, torch.float64 if dev.type == "cpu" else torch.float32).clone()
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    return buf.to(t.device, t.dtype)


def all_gather_objects(obj: Any) -> list[Any]:
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
