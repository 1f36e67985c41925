"""Training events in order: what a loop (or function) does to gradients, optimizers and modes.

Events are recognised from calls: ``zero_grad`` (and ``p.grad = None``), ``backward``, optimizer
``step``, scheduler ``step``, ``clip`` (``clip_grad_norm_``/``clip_grad_value_``), ``unscale``
(``GradScaler.unscale_``), ``eval``, ``train``. A call of a helper function of the same module, or of
a method of the same class, contributes the helper's events at the place of the call (one level).

Framework spellings count too: ``accelerator.backward(loss)``, ``fabric.backward(loss)``,
``self.manual_backward(loss)`` and ``scaler.scale(loss).backward()`` are ``backward`` (with
:attr:`Event.target` the loss), ``scaler.step(optimizer)`` and ``xm.optimizer_step(optimizer)``
are ``step`` (with :attr:`Event.optimizer` the optimizer), any assignment to ``p.grad`` and
``p.grad.zero_()``/``p.grad.data.zero_()`` clear gradients like ``zero_grad``.

For questions about *one iteration* of a loop, :meth:`Event.site` is the statement of the loop's
function where the event happens, :meth:`Event.at_level` says whether it happens once per
iteration of a given loop (not in a nested loop, here or in the helper), and
:meth:`Event.conditional_in` whether it is guarded by a branch inside that loop.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import libcst as cst

from torch_audit.lint.facts.index import Call, Loop, Scope, Statement
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

CLIP_FUNCTIONS = frozenset(
    {
        "torch.nn.utils.clip_grad_norm_",
        "torch.nn.utils.clip_grad_value_",
        "torch.nn.utils.clip_grad.clip_grad_norm_",
        "torch.nn.utils.clip_grad.clip_grad_value_",
        "torch.nn.utils.clip_grad_norm",
    }
)
BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
#: functions that step the optimizer passed as their first argument
STEP_FUNCTIONS = frozenset({"torch_xla.core.xla_model.optimizer_step"})
#: receivers whose ``.backward(loss)`` takes the loss as an argument (accelerate, Fabric,
#: DeepSpeed engines, Lightning's ``self.manual_backward``)
_BACKWARD_OWNER = re.compile(r"accelerat|fabric|engine|deepspeed|booster|strategy|trainer|^self$", re.IGNORECASE)
_SCHEDULER_NAME = re.compile(r"sched|lr_|warmup", re.IGNORECASE)
_OPTIMIZER_NAME = re.compile(r"(^|[._])(opt|optim|optimizer|optimiser)s?($|[._\d])|optimizer|optimiser", re.IGNORECASE)
_SCALER_NAME = re.compile(r"scaler", re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class Event:
    #: zero_grad | backward | step | sched_step | clip | unscale | eval | train
    #: (``train`` also for ``model.train(flag)`` with a mode chosen at run time)
    kind: str
    node: cst.CSTNode
    stmt: Statement
    #: the text of the object acted upon (``optimizer``, ``self.model``), when there is one
    subject: str | None
    #: the helper call this event came through, when it came from a helper
    via: Call | None = None
    #: the indexed call that is the event (None for ``p.grad = None``)
    call: Call | None = None
    #: every helper call on the way, outermost first (``via`` is the first)
    chain: tuple[Call, ...] = ()
    #: ``subject`` as the function that owns the events names it: a helper's parameter is
    #: replaced by the argument passed at the helper call (None when that is not a dotted name)
    caller_subject: str | None = None
    #: for an event of a helper in another file: where it is
    #: (:class:`torch_audit.lint.project.model.Evidence`); ``stmt`` is then a
    #: :class:`RemoteStatement` and ``node`` the local helper call
    remote: object | None = None

    def __post_init__(self) -> None:
        if self.via is not None and not self.chain:
            self.chain = (self.via,)
        if self.via is None and self.caller_subject is None:
            self.caller_subject = self.subject

    @property
    def index(self) -> int:
        """Source position of the event in the function that contains the loop."""
        return self.via.stmt.index if self.via is not None else self.stmt.index

    @property
    def conditional(self) -> bool:
        return bool(self.stmt.branches)

    # -- where, relative to a loop -------------------------------------------------------------
    @property
    def site(self) -> Statement:
        """The statement of the events' function where this event happens (the helper call for
        an event that comes from a helper)."""
        return self.via.stmt if self.via is not None else self.stmt

    @property
    def site_node(self) -> cst.CSTNode:
        """The node to point at in the events' function (the helper call, or the event)."""
        return self.via.node if self.via is not None else self.node

    @property
    def in_helper_loop(self) -> bool:
        """Does the event happen inside a loop of a helper (so possibly many times per call)?"""
        if self.via is None:
            return False
        return bool(self.stmt.loops) or any(c.stmt.loops for c in self.chain[1:])

    def inside(self, loop: Loop) -> bool:
        return self.site.inside(loop)

    def at_level(self, loop: Loop) -> bool:
        """Does the event happen once per iteration of ``loop`` (not in a nested loop)?"""
        return self.site.loop is loop and not self.in_helper_loop

    def conditional_in(self, loop: Loop) -> bool:
        """Is the event guarded by an ``if``/``else``/``except`` inside ``loop`` (or in a helper)?"""
        outer = len(loop.stmt.branches)
        if len(self.site.branches) > outer:
            return True
        if self.via is not None:
            return bool(self.stmt.branches) or any(c.stmt.branches for c in self.chain[1:])
        return False

    # -- what -------------------------------------------------------------------------------
    @property
    def target(self) -> cst.BaseExpression | None:
        """For ``backward``: the expression of the loss (``loss`` in ``loss.backward()``,
        ``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``)."""
        if self.kind != "backward" or self.call is None:
            return None
        call = self.call
        if call.method == "manual_backward" or call.qualname in BACKWARD_FUNCTIONS:
            arg = call.arg(0, "tensors") or call.arg(0, "loss")
            return arg.value if arg is not None else None
        receiver = call.receiver
        if receiver is None:
            return None
        if isinstance(receiver, cst.Call) and isinstance(receiver.func, cst.Attribute):
            if receiver.func.attr.value == "scale" and receiver.args:
                return receiver.args[0].value  # scaler.scale(loss).backward()
        text = dotted(receiver)
        if text is not None and _BACKWARD_OWNER.search(text.rsplit(".", 1)[-1]):
            arg = call.arg(0, "loss")
            return arg.value if arg is not None else None
        return receiver

    @property
    def optimizer(self) -> str | None:
        """For ``step``/``zero_grad``/``unscale``: the text of the optimizer acted upon
        (``optimizer`` in ``scaler.step(optimizer)``)."""
        if self.kind not in ("step", "zero_grad", "unscale"):
            return None
        call = self.call
        if call is not None and (
            call.qualname in STEP_FUNCTIONS
            or (self.kind in ("step", "unscale") and self.subject and _SCALER_NAME.search(self.subject.rsplit(".", 1)[-1]))
        ):
            arg = call.arg(0, "optimizer")
            return dotted(arg.value) if arg is not None else None
        return self.subject


@dataclasses.dataclass(eq=False)
class RemoteStatement:
    """Where an event of another file's helper happens, as far as the local questions go: how
    many loops and branches surround it there (and on the way to it), and its grad mode."""

    index: int
    loops: tuple = ()
    branches: tuple = ()
    withs: tuple = ()
    tries: tuple = ()
    scope: None = None
    node: None = None

    @property
    def loop(self) -> None:
        return None

    def inside(self, loop: Loop) -> bool:
        return False


_GRAD_WITH = {False: (("torch.no_grad", None),), True: (("torch.enable_grad", None),)}


class TrainingFacts:
    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx
        self._events: dict[tuple[int, int], list[Event]] = {}

    # -- classification ----------------------------------------------------------------------
    def _kind_of_step(self, call: Call) -> str | None:
        receiver = call.receiver
        if receiver is None:
            return None
        text = dotted(receiver)
        df = self.ctx.dataflow
        ctor = df.constructor_source(receiver, call.scope, call.stmt.index)
        q = ctor.qualname if ctor is not None else None
        if q:
            if q.startswith("torch.optim.lr_scheduler") or "scheduler" in q.lower():
                return "sched_step"
            if q.startswith("torch.optim.") or q.endswith(("Optimizer", "Adam", "AdamW", "SGD")):
                return "step"
            if q.endswith("GradScaler"):
                return "step" if call.node.args else None
        if text is None:
            return None
        last = text.rsplit(".", 1)[-1]
        if _SCHEDULER_NAME.search(last):
            return "sched_step"
        if _SCALER_NAME.search(last):
            return "step" if call.node.args else None
        if _OPTIMIZER_NAME.search(last):
            return "step"
        return None

    def classify(self, call: Call) -> str | None:
        method = call.method
        q = call.qualname
        if q in CLIP_FUNCTIONS or (method in ("clip_grad_norm_", "clip_grad_value_") and call.receiver is not None):
            return "clip"
        if q in BACKWARD_FUNCTIONS:
            return "backward"
        if q in STEP_FUNCTIONS:
            return "step"
        if call.receiver is None:
            return None
        if method == "backward":
            return "backward"
        if method in ("manual_backward",):
            return "backward"
        if method == "zero_grad":
            return "zero_grad"
        if method == "step":
            return self._kind_of_step(call)
        if method == "unscale_":
            return "unscale"
        if method == "eval" and not call.node.args:
            return "eval"
        if method == "train":
            args = call.node.args
            if not args:
                return "train"
            v = args[0].value
            if isinstance(v, cst.Name) and v.value in ("True", "False"):
                return "train" if v.value == "True" else "eval"
            if len(args) == 1 and (args[0].keyword is None or args[0].keyword.value == "mode"):
                # model.train(is_training): a mode chosen at run time; counts as managing the mode
                return "train"
            return None
        return None

    # -- events --------------------------------------------------------------------------------
    def _direct_events(self, scope: Scope) -> list[Event]:
        events: list[Event] = []
        for call in scope.calls:
            kind = self.classify(call)
            if kind is not None:
                subject = dotted(call.receiver) if call.receiver is not None else None
                if kind == "step" and call.qualname in STEP_FUNCTIONS:
                    arg = call.arg(0, "optimizer")
                    subject = dotted(arg.value) if arg is not None else None
                events.append(Event(kind, call.node, call.stmt, subject, call=call))
        for stmt in scope.statements:
            node = stmt.node
            if isinstance(node, cst.SimpleStatementLine):
                for small in node.body:
                    # p.grad = None (or any new value: the old gradient is gone)
                    if isinstance(small, cst.Assign):
                        for t in small.targets:
                            if isinstance(t.target, cst.Attribute) and t.target.attr.value == "grad":
                                events.append(Event("zero_grad", small, stmt, dotted(t.target.value)))
                    elif isinstance(small, cst.Del):
                        target = small.target
                        if isinstance(target, cst.Attribute) and target.attr.value == "grad":
                            events.append(Event("zero_grad", small, stmt, dotted(target.value)))
        for call in scope.calls:
            # p.grad.zero_() / p.grad.data.zero_() / p.grad.detach_().zero_() clear in place
            if call.method in ("zero_", "fill_") and call.receiver is not None:
                receiver = call.receiver
                if (
                    isinstance(receiver, cst.Call)
                    and isinstance(receiver.func, cst.Attribute)
                    and receiver.func.attr.value in ("detach_", "detach")
                ):
                    receiver = receiver.func.value
                text = dotted(receiver) or ""
                if text.endswith(".data"):
                    text = text[: -len(".data")]
                if text.endswith(".grad"):
                    events.append(Event("zero_grad", call.node, call.stmt, text[: -len(".grad")], call=call))
        events.sort(key=lambda e: e.stmt.index)
        return events

    def function_events(self, scope: Scope, depth: int = 1) -> list[Event]:
        """Events of a function body in source order, including those of helpers it calls
        (``depth`` levels deep)."""
        key = (id(scope), depth)
        if key not in self._events:
            self._events[key] = self._function_events(scope, depth)
        return self._events[key]

    def _function_events(self, scope: Scope, depth: int) -> list[Event]:
        own = self._direct_events(scope)
        if depth <= 0:
            return own
        merged = list(own)
        for call in scope.calls:
            helper = self.helper_of(call)
            if helper is None:
                merged.extend(self._remote_events(call, depth))
                continue
            if helper is scope:
                continue
            for e in self.function_events(helper, depth - 1):
                merged.append(
                    dataclasses.replace(
                        e,
                        via=call,
                        chain=(call, *e.chain),
                        caller_subject=_subject_at_call(e.caller_subject, helper, call),
                    )
                )
        merged.sort(key=lambda e: e.index)
        return merged

    def _remote_events(self, call: Call, depth: int) -> list[Event]:
        """Events of a helper defined in another file (through the project's summaries)."""
        cross = self.ctx.crossfile
        if not cross.active:
            return []
        remote = cross.helper_events(call, depth - 1)
        if not remote:
            return []
        from torch_audit.lint.facts.crossfile import subject_text
        from torch_audit.lint.project.model import render

        hit = cross.resolve(call.qualname)
        params = hit[1].get("params", []) if hit is not None else []
        is_method = bool(hit is not None and hit[1].get("cls"))
        out = []
        for e in remote:
            stmt = RemoteStatement(
                call.stmt.index,
                loops=(None,) * e.loops,
                branches=(None,) * e.branches,
                withs=_GRAD_WITH.get(e.grad, ()),  # type: ignore[arg-type]
            )
            subject = render(e.record["s"]) if e.record.get("s") else None
            out.append(
                Event(
                    e.kind,
                    call.node,
                    stmt,  # type: ignore[arg-type]
                    subject,
                    via=call,
                    chain=(call,),
                    caller_subject=subject_text(e.subject, params, call, is_method),
                    remote=e.evidence,
                )
            )
        return out

    def loop_events(self, loop: Loop, depth: int = 1) -> list[Event]:
        """Events whose statement (or helper call) is inside ``loop``, in order."""
        return [
            e
            for e in self.function_events(loop.scope, depth)
            if (e.via.stmt if e.via is not None else e.stmt).inside(loop)
        ]

    def loops(self) -> list[Loop]:
        """Every loop of the file (module level and in functions), in source order per scope."""
        return [loop for scope in self.ctx.module_scope.walk() for loop in scope.loops]

    def describe(self, event: Event) -> str:
        """``optimizer.step() at line 12`` (``, through train_step() at line 30`` for a helper)."""
        if event.remote is not None:
            method = {"sched_step": "step", "clip": "clip_grad_norm_", "unscale": "unscale_"}.get(event.kind, event.kind)
            what = f"`{event.subject}.{method}()`" if event.subject else f"`{method}()`"
            helper = dotted(event.via.node.func) if event.via is not None else None
            line = self.ctx.position(event.site_node).start.line
            return f"{what} in {event.remote} ({helper or 'a helper'}() called at line {line})"
        if event.call is not None:
            whole = " ".join(self.ctx.code(event.call.node).split())
            if len(whole) <= 50:
                what = f"`{whole}`"
            else:
                func = event.call.node.func
                text = self.ctx.code(func)
                if len(text) > 40 and isinstance(func, cst.Attribute):
                    text = f"(…).{func.attr.value}"
                what = f"`{text}(…)`" if event.call.node.args else f"`{text}()`"
        else:
            what = f"`{self.ctx.code(event.node).strip()}`"
        text = f"{what} at line {self.ctx.position(event.node).start.line}"
        if event.via is not None:
            helper = dotted(event.via.node.func) or "a helper"
            text += f" (in {helper}() called at line {self.ctx.position(event.via.node).start.line})"
        return text

    def related_locations(self, event: Event) -> tuple[tuple[str, int, str], ...]:
        """Where an event of another file's helper is, for SARIF's related locations."""
        remote = event.remote
        if remote is None:
            return ()
        return ((remote.path, remote.line, f"`{event.subject}.{event.kind}()` in {remote.what}"),)  # type: ignore[attr-defined]

    def grad_disabled(self, event: Event) -> bool:
        """Does the event run under ``no_grad``/``inference_mode`` (its own statement, or a
        helper call on the way)?"""
        grad = self.ctx.grad_enabled
        return grad(event.stmt) is False or any(grad(c.stmt) is False for c in event.chain)

    def line(self, node: cst.CSTNode) -> int:
        return self.ctx.position(node).start.line

    def helper_of(self, call: Call) -> Scope | None:
        """The function of this file that a call runs: ``helper(...)`` or ``self.method(...)``."""
        func = call.node.func
        scope = call.scope
        if isinstance(func, cst.Name):
            target = scope.lookup_scope(func.value)
            if target is None:
                return None
            defs = target.assignments.get(func.value, [])
            if len(defs) == 1 and defs[0].kind == "def":
                return target.functions().get(func.value)
            return None
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name):
            s = scope
            while s is not None and s.kind == "lambda":
                s = s.parent
            if s is not None and s.class_scope is not None and s.params and func.value.value == s.params[0]:
                cls = s.class_scope
                if func.attr.value not in cls.attributes:
                    return cls.functions().get(func.attr.value)
        return None

    def callers(self, fn: Scope) -> list[Call]:
        """Calls in this file that run ``fn`` (as a helper or method)."""
        out = []
        for call in self.ctx.indexer.all_calls:
            if call.method == fn.name and self.helper_of(call) is fn:
                out.append(call)
        return out


def _subject_at_call(subject: str | None, helper: Scope, call: Call) -> str | None:
    """``subject`` as named in the helper → as named at ``call``: a parameter is replaced by
    the argument passed for it; ``self.x`` stays for a method called on ``self``; other names
    (globals) stay."""
    if subject is None:
        return None
    head, _, rest = subject.partition(".")
    params = helper.params
    is_method = helper.class_scope is not None and isinstance(call.node.func, cst.Attribute)
    if is_method and params and head == params[0]:
        receiver = dotted(call.node.func.value)  # type: ignore[union-attr]
        if receiver is None:
            return None
        return f"{receiver}.{rest}" if rest else receiver
    if head not in params:
        owner = helper.lookup_scope(head)
        # a global stays itself; a local variable (a loop or comprehension variable) of the
        # helper means nothing at the call
        return subject if owner is not None and owner.kind == "module" else None
    position = params.index(head) - (1 if is_method else 0)
    arg = call.arg(position, head)
    if arg is None:
        return None
    text = dotted(arg.value)
    if text is None:
        return None
    return f"{text}.{rest}" if rest else text
