"""Training events in order: what a loop (or function) does to gradients, optimizers and modes.

Events are recognised from calls: ``zero_grad`` (and ``p.grad = None``), ``backward``, optimizer
``step``, scheduler ``step``, ``clip`` (``clip_grad_norm_``/``clip_grad_value_``), ``unscale``
(``GradScaler.unscale_``), ``eval``, ``train``. A call of a helper function of the same module, or of
a method of the same class, contributes the helper's events at the place of the call (one level).
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
_SCHEDULER_NAME = re.compile(r"sched|lr_|warmup", re.IGNORECASE)
_OPTIMIZER_NAME = re.compile(r"(^|[._])(opt|optim|optimizer|optimiser)s?($|[._\d])|optimizer|optimiser", re.IGNORECASE)
_SCALER_NAME = re.compile(r"scaler", re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class Event:
    kind: str  # zero_grad | backward | step | sched_step | clip | unscale | eval | train
    node: cst.CSTNode
    stmt: Statement
    #: the text of the object acted upon (``optimizer``, ``self.model``), when there is one
    subject: str | None
    #: the helper call this event came through, when it came from a helper
    via: Call | None = None

    @property
    def index(self) -> int:
        """Source position of the event in the function that contains the loop."""
        return self.via.stmt.index if self.via is not None else self.stmt.index

    @property
    def conditional(self) -> bool:
        return bool(self.stmt.branches)


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
            return None
        return None

    # -- events --------------------------------------------------------------------------------
    def _direct_events(self, scope: Scope) -> list[Event]:
        events: list[Event] = []
        for call in scope.calls:
            kind = self.classify(call)
            if kind is not None:
                subject = dotted(call.receiver) if call.receiver is not None else None
                events.append(Event(kind, call.node, call.stmt, subject))
        for stmt in scope.statements:
            node = stmt.node
            if isinstance(node, cst.SimpleStatementLine):
                for small in node.body:
                    if isinstance(small, cst.Assign) and _is_none(small.value):
                        for t in small.targets:
                            if isinstance(t.target, cst.Attribute) and t.target.attr.value == "grad":
                                events.append(Event("zero_grad", small, stmt, dotted(t.target.value)))
        for call in scope.calls:
            # p.grad.zero_() / p.grad.detach_().zero_() clear a gradient in place
            if call.method in ("zero_", "fill_") and call.receiver is not None:
                text = dotted(call.receiver) or ""
                if text.endswith(".grad"):
                    events.append(Event("zero_grad", call.node, call.stmt, text[: -len(".grad")]))
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
            if helper is None or helper is scope:
                continue
            for e in self.function_events(helper, depth - 1):
                merged.append(Event(e.kind, e.node, e.stmt, e.subject, via=call))
        merged.sort(key=lambda e: e.index)
        return merged

    def loop_events(self, loop: Loop, depth: int = 1) -> list[Event]:
        """Events whose statement (or helper call) is inside ``loop``, in order."""
        return [
            e
            for e in self.function_events(loop.scope, depth)
            if (e.via.stmt if e.via is not None else e.stmt).inside(loop)
        ]

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


def _is_none(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"
