"""torch.distributed helpers. Every function that communicates is called symmetrically: on every
rank, at the same point, with tensors of the same shape, whatever that rank has seen."""

from __future__ import annotations

import itertools
import time
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


#: the classes of plain tensors: ``type(t) in PLAIN_TYPES`` is the cheap test the hot paths use
#: before any slower one (a DTensor's shard, a fake tensor, a layout)
PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor, or ``t`` itself."""
    if type(t) in PLAIN_TYPES:  # the common case, without an attribute lookup per parameter
        return t
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


# -- agreeing to meet at the end of a session -----------------------------------------------------

#: How long a rank that left its session cleanly waits for the others to leave theirs before it
#: reports alone. A rank that leaves with an exception says so at once (no wait); this bounds
#: only ranks that died without a word or are still busy inside the block.
CHECK_IN_TIMEOUT = 60.0
GATHER = "gather"
RAISED = "this rank left its session with an exception"

_session_ids = itertools.count()


def _store() -> Any:
    """The default process group's key-value store, or None (a private torch API)."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        return None


def check_in(clean: bool, timeout: float = CHECK_IN_TIMEOUT) -> str | None:
    """Every rank calls this once as its session ends, before any end-of-run collective.

    Returns None when every rank left its session cleanly: then, and only then, every rank goes
    on to the collectives. Otherwise returns why not, the same answer on every clean rank.
    The agreement goes through the process group's store, not a collective, so a rank that
    raised never has to take part in anything."""
    store = _store()
    if store is None:  # nothing to agree through: clean ranks gather as before
        return None if clean else RAISED
    key = f"torch_audit/session{next(_session_ids)}"
    try:
        return agree(store, key, rank(), world_size(), clean, timeout)
    except Exception as exc:  # the store itself failed (a rank's process is gone)
        return f"the ranks could not agree ({type(exc).__name__}: {exc})"


def agree(store: Any, key: str, me: int | None, world: int, clean: bool, timeout: float) -> str | None:
    """:func:`check_in` on ``store`` under ``key``. The first decision written wins (an atomic
    ``compare_set``): a rank that raised writes why at once; the last clean rank to arrive
    writes "gather", which it can only be when every rank arrived cleanly; a clean rank that
    waited ``timeout`` seconds in vain writes that, unless "gather" came first."""
    decision = f"{key}/decision"
    if not clean:
        store.compare_set(decision, "", f"rank {me} left its session with an exception")
        return RAISED
    if store.add(f"{key}/arrived", 1) >= world:
        verdict = store.compare_set(decision, "", GATHER)
    else:
        verdict = _wait_for(store, decision, timeout) or store.compare_set(
            decision, "", f"rank {me} waited {timeout:g} s for the other ranks to leave their sessions"
        )
    text = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
    return None if text == GATHER else text


def _wait_for(store: Any, key: str, timeout: float) -> bytes | None:
    """Poll ``key`` until it exists (its value) or ``timeout`` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not store.check([key]):
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return store.get(key)
