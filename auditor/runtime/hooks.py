"""The session's only contact with torch: global hooks turned into subscriber events.

Installed when the session starts (or a paused session resumes), removed when it ends or
pauses, also when the block raises. Only the hooks some subscriber needs are installed:

==========================  ===============================================================
events                      mechanism
==========================  ===============================================================
forward, root_forward(_end) ``register_module_forward_pre_hook`` / ``register_module_forward_hook(always_call=True)``
                            (global; also the stack of running modules and the outermost
                            "root" modules, indexed for qualified names)
step_pre, step_post         ``register_optimizer_step_pre_hook`` / ``..._post_hook`` (global)
backward, backward_end      ``Tensor.backward`` / ``torch.autograd.backward`` seen through the
                            call window (``intercept.CallWindow``: local ``sys.monitoring``
                            events from Python 3.12, a torch function mode before)
cross_entropy               the forward hook of ``nn.CrossEntropyLoss``/``nn.NLLLoss`` and
                            ``F.cross_entropy``/``F.nll_loss`` through the call window
relu                        the forward hook of ``nn.ReLU`` modules
==========================  ===============================================================

With a cost budget (``pass_sampling``), an unaudited training pass runs with at most one
module pre-hook, which waits for the next forward of the model that paces the passes, and
the optimizer hooks only count its step (see "sampled passes" in the class).

No public torch object is replaced or wrapped. Events of threads other than the one that
opened the session, and events while ``torch.compiler.is_compiling()``, are left alone.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.utils.weak import WeakIdKeyDictionary

from torch_audit.runtime import dist
from torch_audit.runtime.alarm import Alarm
from torch_audit.runtime.errors import AuditFailure
from torch_audit.runtime.events import BackwardEvent, CallEvent
from torch_audit.runtime.intercept import CallWindow, Watch
from torch_audit.runtime.pass_sampling import AUDITED, PROBED

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import AuditSession

__all__ = ["TorchHooks"]

try:
    compiling = torch.compiler.is_compiling
except AttributeError:  # pragma: no cover - old torch
    def compiling() -> bool:
        return False


def _eager(fn: Callable) -> Callable:
    """``fn`` as a hook that ``torch.compile`` does not trace: inside a compiled region it runs
    eagerly, at a graph break. ``torch.compiler.disable`` is only called while Dynamo traces
    (and so is imported): calling it at install time would import Dynamo, over a second of
    start-up for every script that never compiles anything."""
    def hook(*args: Any) -> Any:
        if compiling():
            return torch.compiler.disable(fn)(*args)
        return fn(*args)
    return hook


#: frames between torch's caller of a hook and the hook: ``_eager``'s wrapper and, while
#: compiling, torch.compiler.disable's (torch/_dynamo/eval_frame.py)
_EAGER_WRAPPER = _eager(lambda: None).__code__
_DYNAMO_WRAPPER = "eval_frame.py"


def _hook_caller() -> Any:
    """The code object of the frame that called the hook now running: past the hook and the
    wrappers ``_eager`` puts around it."""
    frame = _getframe(2)
    while frame is not None and (frame.f_code is _EAGER_WRAPPER
                                 or frame.f_code.co_filename.endswith(_DYNAMO_WRAPPER)):
        frame = frame.f_back
    return frame.f_code if frame is not None else None


def _wants_forward(subscriber: Any, cls: type, grad: bool) -> bool:
    types = getattr(subscriber, "forward_types", None)
    if types is not None and not issubclass(cls, tuple(types)):
        return False
    wanted_grad = getattr(subscriber, "forward_grad", None)
    return wanted_grad is None or bool(wanted_grad) == grad


def _nobody() -> None:
    return None


def _remove_handles(handles: Any) -> None:
    for handle in handles:
        try:
            handle.remove()
        except Exception:  # pragma: no cover - a handle whose dict is gone
            pass


#: loss modules whose calls are ``cross_entropy`` events (``NLLLoss`` flagged as such)
LOSS_MODULES = (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)
_RELU = torch.nn.ReLU
_get_ident = threading.get_ident
_grad_enabled = torch.is_grad_enabled
_getframe = sys._getframe
_now = time.perf_counter
_autograd_node = torch._C._current_autograd_node
#: ``step_code`` while an unaudited pass's optimizer step runs (no stack walk: see step_pre)
_LIGHT_STEP = object()


class TorchHooks:
    """The hooks of one session and the little state they keep between torch's callbacks: the
    stack of running modules, the current root module, the call window, the depth of nested
    ``backward()`` calls and the :class:`~torch_audit.runtime.events.StepContext` of each
    optimizer between its step's pre- and post-hook."""

    def __init__(self, session: "AuditSession") -> None:
        self.session = session
        #: event name → ``(subscriber, its on_<event> method)``, shared with the session
        self.by_event = session._by_event
        self.forward_subscribers: tuple[tuple[Any, Callable], ...] = ()
        #: (module class, grad mode) -> the forward subscribers that want such calls (their
        #: ``forward_types`` and ``forward_grad``), built on first use
        self._forward_for: dict[tuple[type, bool], tuple[tuple[Any, Callable], ...]] = {}
        self.handles: list[Any] = []
        self.window: CallWindow | None = None
        self.stack: list[torch.nn.Module] = []
        self.root: torch.nn.Module | None = None
        #: whether the current root forward builds a graph (training) or not (inference)
        self.root_grad_enabled = True
        self.backward_depth = 0
        self.contexts: WeakIdKeyDictionary = WeakIdKeyDictionary()
        #: the module forward hooks' handles, apart: they are taken off during the closure
        #: re-evaluations of an optimizer step (see ``_mute_modules``)
        self.module_handles: list[Any] = []
        #: inside an optimizer's step(): the code object of the frame that ran the step's hooks
        #: (torch's step wrapper), and the backward() calls seen since the step began
        self.step_code: Any = None
        self.step_backwards = 0
        #: pass sampling (the session's ``sampler``): the model whose training passes are
        #: counted (a weak reference), whether the current pass is unaudited, the light
        #: pass's pre-hook, and the pass whose audit the light hook just decided
        self.pacing: Callable[[], Any] = _nobody
        self.light = False
        self.light_handle: Any = None
        self._decided = False
        #: the gaps' alarm (created at the first gap), the gap it is for, and the lock the
        #: alarm's thread and the training thread share for the light hook
        self.alarm: Alarm | None = None
        self._gap_generation = 0
        self._light_lock = threading.Lock()
        #: whether a root module holds parameters: only such a root paces the passes (a loss
        #: module called on its own is a root too; weak keys: a script may build one a step)
        self._has_params: WeakIdKeyDictionary = WeakIdKeyDictionary()

    # -- install / remove -----------------------------------------------------------------------
    def install(self, *, anything: bool) -> None:
        """Install the hooks the subscribed events need (``anything``: some subscriber exists,
        so module names, roots and optimizer steps are tracked)."""
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module

        ev = self.by_event
        self.set_forward_subscribers(tuple(ev.get("forward", ())))
        index = self.session.index
        if anything:  # names and roots are needed whenever anything module-related runs
            self._watch_modules()
            # layers added or parameters replaced inside the block must get names too
            self.handles.append(nn_module.register_module_module_registration_hook(index.registered))
            self.handles.append(nn_module.register_module_parameter_registration_hook(index.registered))
            # run as Python even inside a compiled optimizer step: Dynamo would otherwise
            # trace into them and warn about what it cannot trace (the thread test)
            self.handles.append(optim_module.register_optimizer_step_pre_hook(_eager(self.step_pre)))
            self.handles.append(optim_module.register_optimizer_step_post_hook(_eager(self.step_post)))
        watches: dict[Any, Watch] = {}
        if "cross_entropy" in ev:
            F = torch.nn.functional
            watches[F.cross_entropy] = watches[F.nll_loss] = Watch(self.loss_before)
        if watches or "backward" in ev or "backward_end" in ev:
            # also without a subscriber: backward() is where the window closes
            watches[torch.Tensor.backward] = watches[torch.autograd.backward] = Watch(
                self.backward_before, self.backward_after, closes=True)
        self.window = CallWindow(watches) if watches else None

    def set_forward_subscribers(self, subscribers: tuple[tuple[Any, Callable], ...]) -> None:
        self.forward_subscribers = subscribers
        self._forward_for = {}

    def _forward_targets(self, cls: type, grad: bool) -> tuple[tuple[Any, Callable], ...]:
        """The forward subscribers to call for a module of class ``cls`` in grad mode ``grad``:
        a subscriber may name the module classes it wants (``forward_types``) and whether it
        wants calls with gradients on or off (``forward_grad``), so that a model's many other
        module calls, and inference calls, cost no call of it."""
        targets = tuple(
            (subscriber, on_forward) for subscriber, on_forward in self.forward_subscribers
            if _wants_forward(subscriber, cls, grad)
        )
        self._forward_for[(cls, grad)] = targets
        return targets

    def remove(self) -> None:
        self._mute_modules()
        self._end_light()
        _remove_handles(reversed(self.handles))
        if self.window is not None:
            self.window.shutdown()
        self.window = None
        self.handles = []
        self.stack = []
        self.step_code = None

    def _watch_modules(self) -> None:
        from torch.nn.modules import module as nn_module

        if not self.module_handles:
            self.module_handles = [
                nn_module.register_module_forward_pre_hook(self.forward_pre),
                nn_module.register_module_forward_hook(self.forward_post, always_call=True),
            ]

    def _mute_modules(self) -> None:
        """Take the module forward hooks off: with none left, ``Module.__call__`` takes torch's
        fast path again (a hook that returns at once still costs its slow path)."""
        handles, self.module_handles = self.module_handles, []
        _remove_handles(handles)

    # -- closure re-evaluations -----------------------------------------------------------------
    # An optimizer that takes a closure may evaluate it many times in one step (LBFGS: up to
    # max_iter forward/backward passes, each at trial parameters of its line search). The first
    # evaluation, at the parameters the step starts from, is the one whose loss step() returns:
    # it is watched like any training pass. With closure_passes="first" (the default) the
    # module hooks are off for the rest of the step and no call window opens, so the
    # re-evaluations run at torch's own speed (every hook and a live call window cost 10-15% of
    # an LBFGS step); the checks at step() (gradients, parameters, updates) still see their
    # result. A step that raises leaves them off until the next step begins.
    def _in_step_closure(self) -> bool:
        """Whether a forward starting now runs inside an optimizer's step() after its first
        backward(): the step's wrapper frame is still on the stack (a step that raised has
        none, and its state is dropped)."""
        code = self.step_code
        if code is None or not self.step_backwards:
            return False
        frame = _getframe(2)
        for _ in range(64):
            if frame is None:
                break
            if frame.f_code is code:
                return True
            frame = frame.f_back
        self.step_code = None
        return False

    # -- sampled passes (pass_sampling) --------------------------------------------------------
    # An audited pass has every hook; a probed pass only ``forward_pre_light``, which notes
    # when the next pass starts; a gap has no module hook at all until the alarm thread puts
    # ``forward_pre_light`` back (``_gap_over``). The optimizer hooks stay: an unaudited
    # pass's step is counted. Switches happen in the module pre-hook of the pacing model's
    # forward: torch has copied the pre-hooks it calls for that module, and looks the forward
    # hooks up after its forward, so adding or removing hooks there is safe.
    def _pass_audited(self, module: torch.nn.Module) -> bool:
        """At the start of an outermost forward: whether it is audited. A training forward of
        the model that paces the passes starts a pass, which the sampler may leave unaudited
        (the module hooks then go); every other forward is audited: inference and eval-mode
        forwards, and any forward inside ``backward()`` or an optimizer step."""
        if self._decided:  # the light pre-hook decided this pass already
            self._decided = False
            return True
        if self.backward_depth or self.step_code is not None or not module.training \
                or not _grad_enabled():
            return True
        sampler = self.session.sampler
        if dist.active():  # torch.distributed started after the session: ranks must agree
            sampler.stop("torch.distributed: every rank audits every pass")
            return True
        pacing = self.pacing()
        if module is not pacing:
            has_params = self._has_params.get(module)
            if has_params is None:
                has_params = self._has_params[module] = next(module.parameters(), None) is not None
            if not has_params:
                return True  # a loss module called on its own
            if pacing is not None:  # two models trained (a GAN, ...): passes are not one model's
                sampler.stop("two models are trained")
                return True
            self.pacing = weakref.ref(module)
        now = _now()
        decision = sampler.starts(now)
        if decision == AUDITED:
            return True
        if self.session.needs_every_pass():
            sampler.overrule(decision, now)
            return True
        self._mute_modules()
        if self.window is not None:
            self.window.suspend()
        self.light = True
        self._leave_pass(decision)
        return False

    def _leave_pass(self, decision: str) -> None:
        """An unaudited pass starts (``light`` is set): watch for the next pass's start
        (``PROBED``), or install nothing until the gap's alarm (``GAP``)."""
        with self._light_lock:
            if decision == PROBED:
                if self.light_handle is None:
                    self._watch_next_pass()
                return
            handle, self.light_handle = self.light_handle, None
            if handle is not None:
                handle.remove()
            self._gap_generation += 1
            generation = self._gap_generation
        if self.alarm is None:
            self.alarm = Alarm()
        self.alarm.set(self.session.sampler.gap_seconds, lambda: self._gap_over(generation))

    def _gap_over(self, generation: int) -> None:
        """On the alarm's thread: the gap is over, watch for the next pass's start."""
        with self._light_lock:
            if self.light and self.light_handle is None and generation == self._gap_generation:
                self._watch_next_pass()

    def _watch_next_pass(self) -> None:
        """Install the light pre-hook (the caller holds ``_light_lock``)."""
        from torch.nn.modules import module as nn_module

        self.light_handle = nn_module.register_module_forward_pre_hook(self.forward_pre_light)

    def _end_light(self) -> None:
        """Back to audited passes' hooks' state: no light hook, no alarm, the window's
        events back (the caller installs the module hooks)."""
        if not self.light:
            return
        with self._light_lock:
            self.light = False
            self._gap_generation += 1
            handle, self.light_handle = self.light_handle, None
        if handle is not None:
            handle.remove()
        if self.alarm is not None:
            self.alarm.cancel()
        if self.window is not None:
            self.window.resume()
        if self.step_code is _LIGHT_STEP:
            self.step_code = None

    def forward_pre_light(self, module: torch.nn.Module, args: Any) -> None:
        """The only module hook of a probed pass (and of the wait for the first pass after a
        gap): at the pacing model's next forward, ask the sampler; an audited pass, or an
        inference or eval-mode forward (always audited), gets every hook from its first
        module on."""
        if module is not self.pacing() or compiling() or _get_ident() != self.session._thread:
            return
        if self.step_code is not None or _autograd_node() is not None:
            return  # a closure's evaluation inside step(), a forward re-run inside backward()
        if module.training and _grad_enabled():
            decision = self.session.sampler.starts(_now())
            if decision != AUDITED:
                self._leave_pass(decision)
                return
            self._decided = True
        self._end_light()
        self._watch_modules()
        self.forward_pre(module, args)

    # -- modules --------------------------------------------------------------------------------
    def forward_pre(self, module: torch.nn.Module, args: Any) -> None:
        session = self.session
        if compiling():
            if session.sampler is not None:
                # Dynamo guards on the global hooks: the changes of hooks between audited and
                # unaudited passes would recompile the model every time
                session.sampler.stop("a compiled model")
            return
        # the audited thread is the common case: one comparison before the full test
        if _get_ident() != session._thread and not session._own_thread():
            return
        stack = self.stack
        if not stack:
            if self.window is not None:
                self.window.close()  # forwards run without the mode (fast paths, cost)
            if self.step_code is not None and self.session.closure_passes == "first" \
                    and self._in_step_closure():
                self._mute_modules()  # a re-evaluation of the step's closure: see above
                self.session.unwatched_steps += 1
                return
            if session._restrict_modules:
                if not session.index.knows(module):
                    stack.append(module)
                    return
            else:
                session.index.add_root(module)
            if session.sampler is not None and not self._pass_audited(module):
                return  # an unaudited training pass: the module hooks are off until the next
            self.root = module
            # Without gradients but with inputs that require them, a forward runs inside an
            # autograd Function: reentrant activation checkpointing runs its segment so (and
            # again in backward). That is training, not an inference pass.
            self.root_grad_enabled = torch.is_grad_enabled() or any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args
            )
            session._emit("root_forward", module)
        stack.append(module)

    # The hot path of every module call: each branch is a cheap test, and a helper call per
    # module costs more than the branches (issue 18's many-modules benchmark).
    # long: complexity 23, the per-module hot path
    def forward_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        session = self.session
        if compiling() or (_get_ident() != session._thread and not session._own_thread()):
            return
        stack = self.stack
        if stack and stack[-1] is module:
            stack.pop()
        elif module in stack:  # pragma: no cover - unbalanced (exception inside a child)
            del stack[stack.index(module):]
        window = None
        if not stack:
            if module is self.root:
                session._emit("root_forward_end", module)
            window = self.window  # opened below: the loss and the backward() call come next
        try:
            if output is None:
                return
            cls = type(module)
            if cls in LOSS_MODULES and "cross_entropy" in self.by_event and len(args) >= 2 \
                    and isinstance(args[0], torch.Tensor):
                self.emit_loss(args[0], args[1], {}, cls is torch.nn.NLLLoss, module)
            if session._restrict_modules and not session.index.knows(module):
                return
            if cls is _RELU and "relu" in self.by_event and isinstance(output, torch.Tensor):
                session._emit("relu", CallEvent(None, output=output, module=module))
            grad = _grad_enabled()
            targets = self._forward_for.get((cls, grad))
            if targets is None:
                targets = self._forward_targets(cls, grad)
            for subscriber, on_forward in targets:  # every call: no extra frame
                if subscriber.enabled:
                    try:
                        on_forward(module, args, output)
                    except AuditFailure:
                        raise
                    except Exception as exc:  # a subscriber must never break training
                        session._subscriber_failed(subscriber, exc)
        finally:
            if window is not None:  # after the subscribers: their torch calls are not watched
                window.open()

    def current_module(self) -> torch.nn.Module | None:
        return self.stack[-1] if self.stack else None

    # -- optimizers -----------------------------------------------------------------------------
    def step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self.session._own_thread():
            return
        if self.light:
            if not self.session._light_step_pre(optimizer):
                # an unaudited pass's step is only counted; a marker instead of the step
                # wrapper's frame: no closure evaluation is watched inside it
                self.step_code = _LIGHT_STEP
                return
            self._end_light()  # an optimizer's first step is audited (the wiring checks)
        if self.window is not None:
            self.window.close()  # the update runs without the mode
        if not self.module_handles:
            self._watch_modules()  # the last step raised during a muted closure pass
        self.step_code = _hook_caller()  # torch's step wrapper, which calls this hook
        self.step_backwards = 0
        ctx = self.session._begin_step(optimizer)
        if ctx is not None:
            self.contexts[optimizer] = ctx

    def step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self.session._own_thread():
            return
        if self.light:
            self.step_code = None
            self.session._light_step_post(optimizer)
            return
        self.step_code = None
        if not self.module_handles and self.handles:
            self._watch_modules()
        ctx = self.contexts.pop(optimizer, None)
        if ctx is not None:  # None: not watched, or the pre-hook did not run
            self.session._end_step(ctx)

    # -- calls seen through the call window -----------------------------------------------------
    def backward_before(self, func: Callable, args: tuple, kwargs: dict) -> BackwardEvent | None:
        """``Tensor.backward``/``torch.autograd.backward`` seen through the call window, before
        the call: the ``backward`` event (the window closes at this call: nothing after it is
        of interest until the next forward ends). Returns the event for ``backward_after``, or
        None for a call the session leaves alone."""
        session = self.session
        if self.backward_depth or compiling() or (
                _get_ident() != session._thread and not session._own_thread()):
            return None
        tensors = args[0] if args else kwargs.get("tensors", kwargs.get("self"))
        try:
            if isinstance(tensors, torch.Tensor):  # loss.backward(): the common case
                event = BackwardEvent((tensors,))
            else:
                event = BackwardEvent(tuple(t for t in (tensors or ()) if isinstance(t, torch.Tensor)))
        except Exception:  # an argument torch itself will reject: let it say so
            return None
        session._emit("backward", event)
        self.step_backwards += 1
        self.backward_depth += 1
        return event

    def backward_after(self, event: BackwardEvent, returned: bool) -> None:
        """The end of a ``backward()`` call ``backward_before`` saw: ``backward_end`` when it
        returned (not when it raised)."""
        self.backward_depth -= 1
        if returned:
            self.session._emit("backward_end", event)

    def loss_before(self, func: Callable, args: tuple, kwargs: dict) -> None:
        """``F.cross_entropy``/``F.nll_loss`` seen through the call window."""
        if not compiling() and args and isinstance(args[0], torch.Tensor) and self.session._own_thread():
            target = args[1] if len(args) > 1 else kwargs.get("target")
            extra = {k: v for k, v in kwargs.items() if k != "target"}
            self.emit_loss(args[0], target, extra, func is torch.nn.functional.nll_loss, None)
        return None

    def emit_loss(self, input: torch.Tensor, target: Any, kwargs: dict, nll: bool,
                  module: torch.nn.Module | None) -> None:
        event = CallEvent(input, target, kwargs=kwargs, module=module or self.current_module())
        event.loss = "nll_loss" if nll else "cross_entropy"
        self.session._emit("cross_entropy", event)
