"""Seeing ``backward()`` and the loss functions without replacing any torch object.

The session used to swap ``torch.autograd.backward``, ``F.cross_entropy`` and ``F.relu`` for
wrappers. A swapped public function is seen by everything that stores a reference to it:
``nn.TransformerEncoderLayer`` keeps ``F.relu`` and compares it by identity to choose its fast
path, and ``torch.save(model)`` pickles it by name and fails on the wrapper. So nothing is
replaced any more; the calls are *observed*, and only while a *window* is open: it opens when an
outermost module forward ends (after the session's work on its output) and closes when the next
outermost forward starts, an optimizer steps, or ``backward()`` is called. The window covers
what the audit needs to see, the loss computed from the model's output and the ``backward()``
call on it, and nothing of the forward passes, the optimizer's update or the data loading.
Limits that follow (documented in ``docs/runtime.md``): a ``backward()`` whose graph was built
without any module forward, and a loss function called inside a module's ``forward`` (Hugging
Face models compute their loss there), are not seen through the window; loss *modules*
(``nn.CrossEntropyLoss``, ``nn.NLLLoss``) are seen by the session's module hooks wherever they
run.

Calls are observed in one of two ways, with the same window:

- **Local ``sys.monitoring`` events** (PEP 669, Python 3.12 and later): ``PY_START`` and
  ``PY_RETURN`` events on the code objects of the watched functions only, set once for the
  session. Nothing else is instrumented, so a call of any other function costs nothing, and a
  watched call outside the window costs one callback that returns at once. A call that raises
  has no ``PY_RETURN`` (``PY_UNWIND`` exists only as a global event, which would cost every
  exception of the program): it is noticed when its frame is no longer on the stack. The
  session takes a free tool id (4 or 3; ids 0-2 and 5 are the debugger's, coverage's,
  profilers' and optimizers'); when both are taken it uses the mode.
- **A torch function mode** (:class:`~torch.overrides.TorchFunctionMode`), before Python 3.12:
  the documented interception point every ``torch.*`` function, ``Tensor`` method and ``F.*``
  function passes through while a mode is active. It costs a Python call for every torch call
  made while it is on the stack (about 2 us) and makes ``has_torch_function`` true, which turns
  off fast paths such as the native transformer's, so it is on the stack only while the window
  is open. It is pushed only when no other mode is on the stack: a user's mode (also
  ``with torch.device(...)``) pops whatever is on top when its ``with`` block ends, so ours must
  never sit on top of one. The one exception is the default device of
  ``torch.set_default_device``: it lives at the bottom of the stack and takes the modes above it
  off and back when it changes. Only the session's own thread has the mode (the mode stack is
  thread-local).

Either way a watched call is handled by a :class:`Watch`: ``before`` sees the arguments before
the function runs, ``after`` learns whether it returned or raised.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, NamedTuple

import torch
from torch.overrides import TorchFunctionMode, handle_torch_function

__all__ = ["CallWindow", "Watch"]


class Watch(NamedTuple):
    """What the window does at a call of one watched function."""

    #: ``before(func, args, kwargs)``, before the function runs; returns a token for ``after``
    #: (None: nothing to do after the call)
    before: Callable[[Callable, tuple, dict], Any]
    #: ``after(token, returned)``: ``returned`` is False when the call raised
    after: Callable[[Any, bool], None] | None = None
    #: the window closes at this call (``backward()``: nothing after it is of interest)
    closes: bool = False


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
#: whether calls are observed with local sys.monitoring events (Python 3.12 and later)
_MONITORING = hasattr(sys, "monitoring")
#: the sys.monitoring tool ids the session may take, in order of preference
_TOOL_IDS = (4, 3)
_get_ident = threading.get_ident


def _frame_arguments(frame: Any) -> tuple[tuple, dict]:
    """The arguments a frame was called with, at its start (nothing else is bound yet): the
    positional parameters in order, the keyword-only ones by name."""
    code = frame.f_code
    values = frame.f_locals
    names = code.co_varnames
    positional = code.co_argcount
    args = tuple(values[name] for name in names[:positional])
    kwargs = {name: values[name] for name in names[positional:positional + code.co_kwonlyargcount]}
    return args, kwargs


def _not_returned(calls: list[tuple[Any, Callable, Any]]) -> None:
    """Finish watched calls that ended without a return (they raised), innermost first."""
    for _, after, token in reversed(calls):
        after(token, False)


class _Monitor:
    """Local ``PY_START``/``PY_RETURN`` events on the watched functions' code objects."""

    def __init__(self, window: "CallWindow", tool: int, codes: dict[int, tuple]) -> None:
        self.window = window
        self.tool = tool
        #: id(code) -> (code, func, watch); keyed by id: hashing a code object hashes its contents
        self.codes = codes
        #: watched calls in progress: (frame, after, token), innermost last
        self.calls: list[tuple[Any, Callable, Any]] = []

    @classmethod
    def start(cls, window: "CallWindow") -> "_Monitor | None":
        """Claim a tool id and instrument the watched functions; None when no tool id is free
        or a watched function has no Python code."""
        codes = {}
        for func, watch in window.watches.items():
            code = getattr(func, "__code__", None)
            if code is None:
                return None
            codes[id(code)] = (code, func, watch)
        mon = sys.monitoring
        for tool in _TOOL_IDS:
            try:
                mon.use_tool_id(tool, "torch-audit")
            except ValueError:  # taken by another tool
                continue
            self = cls(window, tool, codes)
            events = mon.events
            mon.register_callback(tool, events.PY_START, self._on_start)
            mon.register_callback(tool, events.PY_RETURN, self._on_return)
            self.instrument(True)
            return self
        return None

    def instrument(self, on: bool) -> None:
        """Turn the watched functions' events on or off (CPython re-instruments their code)."""
        mon = sys.monitoring
        if mon.get_tool(self.tool) != "torch-audit":  # freed behind our back
            return
        events = mon.events.PY_START | mon.events.PY_RETURN if on else 0
        for code, _, _ in self.codes.values():
            mon.set_local_events(self.tool, code, events)

    def stop(self) -> None:
        """Remove the instrumentation and give the tool id back; calls still in progress are
        finished as not returned."""
        mon = sys.monitoring
        if mon.get_tool(self.tool) == "torch-audit":  # not freed behind our back
            self.instrument(False)
            mon.register_callback(self.tool, mon.events.PY_START, None)
            mon.register_callback(self.tool, mon.events.PY_RETURN, None)
            mon.free_tool_id(self.tool)
        calls, self.calls = self.calls, []
        _not_returned(calls)

    # CPython delivers no monitoring event while a callback of it runs: the session's own calls
    # of watched functions inside the handlers are not observed (as torch keeps the mode off the
    # stack while its handler runs; tests/runtime/test_call_window.py)
    def _on_start(self, code: Any, offset: int) -> None:
        window = self.window
        # events come from every thread: another thread's backward() must not close the window
        if not window._live or _get_ident() != window._thread:
            return
        if self.calls:
            self.prune(sys._getframe(2))
        _, func, watch = self.codes[id(code)]
        frame = sys._getframe(1)  # the watched function's frame, just started
        if watch.closes:
            window._live = False
        try:
            args, kwargs = _frame_arguments(frame)
        except Exception:  # a frame unlike the function's signature: never the user's problem
            return
        token = watch.before(func, args, kwargs)
        if token is not None and watch.after is not None:
            self.calls.append((frame, watch.after, token))

    def _on_return(self, code: Any, offset: int, value: Any) -> None:
        calls = self.calls
        if not calls:
            return
        frame = sys._getframe(1)
        for i in range(len(calls) - 1, -1, -1):
            if calls[i][0] is frame:
                _, after, token = calls[i]
                raised = calls[i + 1:]  # inner calls that ended without a return
                del calls[i:]
                _not_returned(raised)
                after(token, True)
                return

    def prune(self, frame: Any) -> None:
        """Finish, as not returned, the calls whose frames are not on the stack of ``frame``
        any more: they raised (and drop the frames, which hold the graph's tensors)."""
        live = set()
        while frame is not None:
            live.add(id(frame))
            frame = frame.f_back
        calls = self.calls
        dead = len(calls)
        while dead and id(calls[dead - 1][0]) not in live:
            dead -= 1
        raised, calls[dead:] = calls[dead:], []
        _not_returned(raised)


class _Mode(TorchFunctionMode):
    """Calls ``window._through_mode(func, watch, ...)`` for the functions it watches while
    live; every other call goes straight through."""

    def __init__(self, window: "CallWindow") -> None:
        super().__init__()
        self.window = window
        self.watches = window.watches
        self.live = True
        #: inside a handler: the mode is stashed off the stack by torch until it returns
        self.busy = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.live:
            try:
                watch = self.watches.get(func)
            except TypeError:  # an unhashable callable
                watch = None
            if watch is not None:
                self.busy += 1
                try:
                    return self.window._through_mode(func, watch, args, kwargs)
                finally:
                    self.busy -= 1
        return func(*args, **kwargs)


class CallWindow:
    """The session's window on torch calls (see the module docstring)."""

    def __init__(self, watches: dict[Callable, Watch]) -> None:
        self.watches = watches
        #: the monitoring window is open, for the thread that opened it (monitoring events
        #: come from every thread; the mode stack is per thread)
        self._live = False
        self._thread: int | None = None
        self._monitor = _Monitor.start(self) if _MONITORING else None
        self._mode = _Mode(self)
        self._pushed = False
        #: monitoring events off between audited passes (suspend)
        self._suspended = False
        #: the one-shot profile function of _close_after_mode_call, while it waits
        self._closer: Callable | None = None

    @property
    def mechanism(self) -> str:
        """``"monitoring"`` or ``"mode"``: how calls are observed."""
        return "monitoring" if self._monitor is not None else "mode"

    @property
    def is_open(self) -> bool:
        if self._monitor is not None:
            return self._live
        return self._pushed and self._mode.live

    def open(self) -> None:
        """Start observing (after an outermost forward)."""
        monitor = self._monitor
        if monitor is not None:
            if monitor.calls:
                monitor.prune(sys._getframe(1))
            self._thread = _get_ident()
            self._live = True
            return
        self._open_mode()

    def close(self) -> None:
        """Stop observing; a watched call in progress is still followed to its end."""
        if self._monitor is not None:
            self._live = False
            return
        self._close_mode()

    def suspend(self) -> None:
        """Close, and stop even the events of the watched functions' calls (monitoring): an
        unaudited training pass pays nothing for them. ``resume()`` turns them back on."""
        self.close()
        if self._monitor is not None and not self._suspended:
            self._suspended = True
            self._monitor.instrument(False)

    def resume(self) -> None:
        if self._monitor is not None and self._suspended:
            self._suspended = False
            self._monitor.instrument(True)

    def shutdown(self) -> None:
        """Stop everything (the session ends or pauses)."""
        self.close()
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            monitor.stop()

    # -- the mode -------------------------------------------------------------------------------
    def _through_mode(self, func: Callable, watch: Watch, args: tuple, kwargs: dict) -> Any:
        if watch.closes:
            self._close_mode()
        token = watch.before(func, args, kwargs)
        if token is None or watch.after is None:
            result = func(*args, **kwargs)
        else:
            try:
                result = func(*args, **kwargs)
            except BaseException:
                watch.after(token, False)
                raise
            watch.after(token, True)
        if watch.closes:
            self._close_after_mode_call()
        return result

    def _open_mode(self) -> None:
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

    def _close_after_mode_call(self) -> None:
        """Called inside the mode's handler: take the mode off the stack as soon as torch has
        put it back.

        While a handler runs, torch keeps the mode stashed and pushes it back after
        ``__torch_function__`` returns, so ``close`` cannot take it off the stack from there.
        Left on until the next close (the next forward), a dead mode costs every torch call in
        between about 2 us: a hand-written update, ``zero_grad()``, the next batch. So a
        one-shot profile function (this thread only) closes the window when torch's
        ``handle_torch_function``, which put the mode back, returns. It is not installed when
        the thread has a profile function already (a profiler of the user's), nor on Python
        3.12 and later, where setting and clearing one re-instruments the code that runs next
        (about 45 us a step measured on 3.12 and 3.13; the mode is used there only when no
        sys.monitoring tool id is free): the mode then stays until the next close."""
        self._mode.live = False
        if not _CHEAP_PROFILE or not self._pushed or sys.getprofile() is not None:
            return
        frame = sys._getframe(1)
        for _ in range(8):  # _through_mode, _Mode.__torch_function__, then handle_torch_function
            if frame is None or frame.f_code is _HANDLE_TORCH_FUNCTION:
                break
            frame = frame.f_back
        if frame is None or frame.f_code is not _HANDLE_TORCH_FUNCTION:
            return  # called some other way: left to the next close
        target = frame

        def closer(frame: Any, event: str, arg: Any) -> None:
            if frame is target and event == "return":
                self._close_mode()

        self._closer = closer
        sys.setprofile(closer)

    def _close_mode(self) -> None:
        """Take the mode off the stack (keeping the order of the others)."""
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
