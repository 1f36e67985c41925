"""Seeing ``backward()`` and the loss functions without replacing any torch object.

The session used to swap ``torch.autograd.backward``, ``F.cross_entropy`` and ``F.relu`` for
wrappers. A swapped public function is seen by everything that stores a reference to it:
``nn.TransformerEncoderLayer`` keeps ``F.relu`` and compares it by identity to choose its fast
path, and ``torch.save(model)`` pickles it by name and fails on the wrapper. So nothing is
replaced any more; calls are observed with a :class:`~torch.overrides.TorchFunctionMode`, the
documented interception point every ``torch.*`` function, ``Tensor`` method and ``F.*``
function passes through when a mode is active.

A mode costs a Python call for every torch call made while it is on the stack (about 2 us),
and it makes ``has_torch_function`` true, which turns off fast paths such as the native
transformer's. So the mode is *not* on for the whole session: the session opens a *window*
when an outermost module forward ends (after the session's work on its output) and closes it
when the next outermost forward starts, an optimizer steps, or ``backward()`` returns
(:meth:`CallWindow.close_after_handler`). The window covers what the audit needs to see,
the loss computed from the model's output and the ``backward()`` call on it, and nothing of the
forward passes, the optimizer's update or the data loading. Limits that follow (documented in
``docs/runtime.md``): a ``backward()`` whose graph was built without any module forward, and a
loss function called inside a module's ``forward`` (Hugging Face models compute their loss
there) are not seen through the window; loss *modules* (``nn.CrossEntropyLoss``,
``nn.NLLLoss``) are seen by the session's module hooks wherever they run.

Only the session's own thread has the mode (the mode stack is thread-local), and the window is
opened only when no other mode is on the stack: a user's mode (also ``with torch.device(...)``)
pops whatever is on top when its ``with`` block ends, so ours must never sit on top of one. The
one exception is the default device of ``torch.set_default_device``: it lives at the bottom of
the stack and takes the modes above it off and back when it changes.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode, handle_torch_function

__all__ = ["CallWindow"]

def _stack_len() -> int:
    return torch._C._len_torch_function_stack()


def _stack_modes() -> list[Any]:
    return [torch._C._get_function_stack_at(i) for i in range(_stack_len())]


def _default_device_mode() -> Any:
    """The mode ``torch.set_default_device`` keeps at the bottom of the stack, if any."""
    return getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)


#: the torch function that takes a mode off the stack, calls it, and puts it back
_HANDLE_TORCH_FUNCTION = handle_torch_function.__code__
#: whether a profile function costs only the calls it sees (before sys.monitoring, 3.12)
_CHEAP_PROFILE = sys.version_info < (3, 12)


class _Mode(TorchFunctionMode):
    """Calls ``handlers[func](func, args, kwargs)`` for the functions it watches while live;
    every other call goes straight through."""

    def __init__(self, handlers: dict[Any, Callable]) -> None:
        super().__init__()
        self.handlers = handlers
        self.live = True
        #: inside a handler: the mode is stashed off the stack by torch until it returns
        self.busy = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.live:
            try:
                handler = self.handlers.get(func)
            except TypeError:  # an unhashable callable
                handler = None
            if handler is not None:
                self.busy += 1
                try:
                    return handler(func, args, kwargs)
                finally:
                    self.busy -= 1
        return func(*args, **kwargs)


class CallWindow:
    """The session's window on torch calls (see the module docstring)."""

    def __init__(self, handlers: dict[Any, Callable]) -> None:
        self._mode = _Mode(handlers)
        self._pushed = False
        #: the one-shot profile function of close_after_handler, while it waits
        self._closer: Callable | None = None

    @property
    def is_open(self) -> bool:
        return self._pushed and self._mode.live

    def open(self) -> None:
        """Put the mode on this thread's stack, unless a mode of the user's is there."""
        if self._pushed:
            self._mode.live = True
            return
        modes = _stack_modes()
        if modes and modes != [_default_device_mode()]:
            return  # a user's mode would pop ours when its block ends
        torch._C._push_on_torch_function_stack(self._mode)
        self._pushed = True
        self._mode.live = True

    def close_after_handler(self) -> None:
        """Called from a handler: close the window, taking the mode off the stack as soon as
        torch has put it back.

        While a handler runs, torch keeps the mode stashed and pushes it back after
        ``__torch_function__`` returns, so ``close`` cannot take it off the stack from there.
        Left on until the next close (the next forward), a dead mode costs every torch call in
        between about 2 us: a hand-written update, ``zero_grad()``, the next batch. So a
        one-shot profile function (this thread only) closes the window when torch's
        ``handle_torch_function``, which put the mode back, returns. It is not installed when
        the thread has a profile function already (a profiler of the user's), nor on Python
        3.12 and later, where setting and clearing one re-instruments the code that runs next
        (about 45 us a step measured on 3.12 and 3.13, more than the dead window costs a
        typical step): the mode then stays until the next close, as it would without this."""
        self._mode.live = False
        if not _CHEAP_PROFILE or not self._pushed or sys.getprofile() is not None:
            return
        frame = sys._getframe(1)
        for _ in range(8):  # the handler, _Mode.__torch_function__, then handle_torch_function
            if frame is None or frame.f_code is _HANDLE_TORCH_FUNCTION:
                break
            frame = frame.f_back
        if frame is None or frame.f_code is not _HANDLE_TORCH_FUNCTION:
            return  # called some other way: left to the next close
        target = frame

        def closer(frame: Any, event: str, arg: Any) -> None:
            if frame is target and event == "return":
                self.close()

        self._closer = closer
        sys.setprofile(closer)

    def close(self) -> None:
        """Stop watching, and take the mode off the stack (keeping the order of the others)."""
        if self._closer is not None:
            if sys.getprofile() is self._closer:
                sys.setprofile(None)
            self._closer = None
        self._mode.live = False
        if not self._pushed or self._mode.busy:
            return  # inside a handler torch has stashed the mode; removed at the next close
        above = []
        found = False
        while _stack_len():
            mode = torch._C._pop_torch_function_stack()
            if mode is self._mode:
                found = True
                break
            above.append(mode)
        for mode in reversed(above):
            torch._C._push_on_torch_function_stack(mode)
        if found or not above:
            self._pushed = False
