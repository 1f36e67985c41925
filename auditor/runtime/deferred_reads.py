"""Deferred device reads: the session's one host transfer per optimizer step.

Subscribers hand device tensors and callbacks to :meth:`DeferredReads.defer`; at a flush (the
optimizer step's pre-hook, or when :data:`MAX_PENDING` reads wait) everything deferred is
concatenated into one float32 vector per device, read with one ``tolist()``, and the callbacks
get plain Python floats. On CUDA (``ASYNC_READ_DEVICES``), unless the session reads in the step,
the vector is copied to pinned memory without waiting and delivered at a later flush once its
event says the copy is done, so a step never synchronises the host.

The reads know nothing of checks or findings: each read carries an *owner* (the subscriber that
deferred it), and the two functions given at construction call a callback for its owner (the
session's guarded call) and report a failure of the reading itself on behalf of owners.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from torch_audit.runtime import dist

__all__ = ["ASYNC_READ_DEVICES", "MAX_PENDING", "DeferredReads", "readable", "start_host_copy"]

#: Device types whose deferred reads are copied to the host asynchronously and read a step
#: later (the tests add "cpu" to run this path without a GPU).
ASYNC_READ_DEVICES = frozenset({"cuda"})

#: deferred reads held at most before they are read without waiting for an optimizer step
#: (a step defers a handful: six with every check on a 148-parameter transformer). Kept small
#: for loops without an optimizer: reads held for hundreds of steps outlive the garbage
#: collector's young generations, and its full collections (over every object of torch's
#: heap, about 0.1 s each) then come every few thousand steps
MAX_PENDING = 64

#: (owner, callback) pairs waiting for the values of one tensor
Callbacks = list[tuple[Any, Callable[[list[float]], Any]]]


def start_host_copy(flat: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Start copying ``flat`` to pinned host memory without waiting: the event to ``query()``
    (done yet?) or ``synchronize()`` on, and the host tensor that holds the values once it is."""
    host = torch.empty(flat.shape, dtype=flat.dtype, device="cpu", pin_memory=True)
    host.copy_(flat, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return event, host


def readable(tensor: torch.Tensor) -> torch.Tensor | None:
    """The plain tensor to read for a deferred value, or None when it holds no data to read:
    a DTensor gives its local shard; meta and fake tensors (a shape probe under
    ``torch.device("meta")``, a trace under ``FakeTensorMode``) and other tensor subclasses that
    are not plain tensors are skipped, silently: they are not training."""
    t = dist.local(tensor)
    if type(t) in dist.PLAIN_TYPES and not _wraps_another(t):
        # the common case (every check's flags, every loss): torch's is_fake costs over 1 us a
        # tensor in Python, most of a read of a few dozen values
        return None if t.device.type == "meta" else t
    if t.device.type == "meta" or _is_fake(t):
        return None
    if type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter):
        return t
    return None


def _wraps_another(t: torch.Tensor) -> bool:
    """Whether a tensor of a plain class is a functionalization or functorch wrapper, which
    may wrap a fake tensor (what ``is_fake`` unwraps)."""
    try:
        return torch._is_functional_tensor(t) or torch._C._functorch.is_functorch_wrapped_tensor(t)
    except AttributeError:  # pragma: no cover - a torch without them: ask is_fake
        return True


_is_fake_fn: Any = None


def _is_fake(t: torch.Tensor) -> bool:
    global _is_fake_fn
    if _is_fake_fn is None:
        try:
            from torch._subclasses.fake_tensor import is_fake
        except Exception:  # pragma: no cover - a torch without it
            return False
        _is_fake_fn = is_fake
    return _is_fake_fn(t)


class DeferredReads:
    """The reads waiting for the next flush and the asynchronous copies still in flight."""

    def __init__(self, call: Callable[..., Any], failed: Callable[[str, BaseException, Callbacks], None],
                 overflow: Callable[[], None], *, late: bool) -> None:
        #: ``call(owner, callback, values)``: deliver values to one callback (guarded)
        self._call = call
        #: ``failed(what, exc, callbacks)``: reading failed on behalf of these callbacks' owners
        self._failed = failed
        #: whether reads on the devices of ``ASYNC_READ_DEVICES`` are copied asynchronously and
        #: delivered at a later flush (False: read in the step, e.g. for ``fail_fast``)
        self.late = late
        #: called when :data:`MAX_PENDING` reads wait (the session flushes them)
        self._overflow = overflow
        self.pending: list[tuple[torch.Tensor, Callbacks]] = []
        self._pending_ids: dict[int, int] = {}
        self._inflight: list[tuple[Any, torch.Tensor, list]] = []

    def __len__(self) -> int:
        return len(self.pending)

    def defer(self, owner: Any, tensor: torch.Tensor, callback: Callable[[list[float]], Any]) -> None:
        key = id(tensor)
        slot = self._pending_ids.get(key)
        if slot is not None and self.pending[slot][0] is tensor:
            self.pending[slot][1].append((owner, callback))  # one tensor read once for all
            return
        self._pending_ids[key] = len(self.pending)
        self.pending.append((tensor, [(owner, callback)]))
        if len(self.pending) >= MAX_PENDING:
            # no optimizer step reads them (a hand-written update, an inference loop): read now
            # rather than hold every step's tensors until the end
            self._overflow()

    def read(self, *, final: bool = False) -> None:
        """Read every deferred tensor with one transfer per device and run the callbacks (and,
        first, those of earlier asynchronous copies that are done; all of them when ``final``)."""
        batch, self.pending, self._pending_ids = self.pending, [], {}
        self._drain_inflight(wait=final)
        by_device: dict[Any, list] = {}
        for tensor, callbacks in batch:
            try:
                plain = readable(tensor)
            except Exception as exc:  # a tensor type nobody foresaw: its owners stop
                self._failed("reading a deferred value", exc, callbacks)
                continue
            if plain is not None:
                by_device.setdefault(plain.device, []).append((plain, callbacks))
        for device, items in by_device.items():
            try:
                self._read_group(device, items, final)
            except Exception as exc:  # never an exception in the user's training
                if _passes_through(exc):
                    raise
                self._failed("reading deferred values", exc,
                             [cb for _, callbacks in items for cb in callbacks])

    def clear(self) -> None:
        self.pending, self._pending_ids, self._inflight = [], {}, []

    def _read_group(self, device: torch.device, items: list, final: bool) -> None:
        items, flat = _flat_values(items)
        if self.late and device.type in ASYNC_READ_DEVICES and not final:
            self._inflight.append((*start_host_copy(flat), items))
        else:
            self._deliver(flat.tolist(), items)

    def _drain_inflight(self, wait: bool) -> None:
        keep = []
        for event, host, items in self._inflight:
            if wait:
                event.synchronize()
            elif not event.query():
                keep.append((event, host, items))
                continue
            self._deliver(host.tolist(), items)
        self._inflight = keep

    def _deliver(self, values: list[float], items: list) -> None:
        offset = 0
        for tensor, callbacks in items:
            n = tensor.numel()
            part = values[offset:offset + n]
            offset += n
            for owner, cb in callbacks:
                self._call(owner, cb, part)


def _is_loss_scalar(t: torch.Tensor) -> bool:
    return t.dim() == 0 and t.dtype is torch.float32 and not t.requires_grad


def _flat_values(items: list) -> tuple[list, torch.Tensor]:
    """``items`` with the float32 0-d tensors (the losses of ``backward()`` calls) moved first,
    in their order, and the values of all as one float32 vector in that order: the scalars are
    read with one ``stack`` instead of a reshape each."""
    scalars, others = [], []
    for item in items:
        (scalars if _is_loss_scalar(item[0]) else others).append(item)
    parts = [torch.stack([t for t, _ in scalars])] if scalars else []
    parts.extend(_flat_float32(t) for t, _ in others)
    return scalars + others, torch.cat(parts)


def _flat_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 1-D float32 tensor outside autograd; most deferred values (the checks' flag
    vectors) are one already, and three dispatches each add up over dozens of reads."""
    if t.dtype is torch.float32 and t.dim() == 1 and not t.requires_grad:
        return t
    return t.detach().reshape(-1).to(torch.float32)


def _passes_through(exc: BaseException) -> bool:
    """``AuditFailure`` (fail_fast) raised by a callback must reach the user."""
    from torch_audit.runtime.errors import AuditFailure

    return isinstance(exc, AuditFailure)
