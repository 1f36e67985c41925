"""Optimizer constructions and parameter freezing, as several optimizer rules see them.

``optimizer_constructions(ctx)`` lists every ``torch.optim.<Optimizer>(...)`` call with the
``.parameters()`` calls that feed it (directly or through parameter-group dicts), and
``freezes(ctx, scope)`` lists the statements of a function that switch ``requires_grad`` on or off
for a module or some of its parameters. Everything is syntactic; nothing is imported.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

import libcst as cst

from torch_audit.lint.facts.index import Call, Scope, argument
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

_NOT_OPTIMIZERS = ("torch.optim.lr_scheduler", "torch.optim.swa_utils")


@dataclasses.dataclass
class ParamsCall:
    """``<owner>.parameters()`` passed to an optimizer, unfiltered."""

    node: cst.Call
    owner: str


@dataclasses.dataclass
class OptimizerCall:
    call: Call
    name: str
    #: the unfiltered ``.parameters()`` calls among the optimizer's params (direct or in groups)
    params: list[ParamsCall]


@dataclasses.dataclass
class Freeze:
    """``requires_grad`` set for ``subject`` (dotted text) at statement ``index``."""

    subject: str
    index: int
    value: bool
    node: cst.CSTNode


def is_optimizer(qualname: str | None) -> bool:
    if not qualname or not qualname.startswith("torch.optim.") or qualname.startswith(_NOT_OPTIMIZERS):
        return False
    last = qualname.rsplit(".", 1)[-1]
    return last[:1].isupper() and last != "Optimizer"


def _params_call(expr: cst.BaseExpression) -> ParamsCall | None:
    if (
        isinstance(expr, cst.Call)
        and isinstance(expr.func, cst.Attribute)
        and expr.func.attr.value == "parameters"
        and not expr.args
    ):
        owner = dotted(expr.func.value)
        if owner is not None:
            return ParamsCall(expr, owner)
    return None


def optimizer_constructions(ctx: "FileContext") -> Iterator[OptimizerCall]:
    for call in ctx.indexer.all_calls:
        if not is_optimizer(call.qualname):
            continue
        arg = argument(call.node, 0, "params")
        if arg is None:
            continue
        found: list[ParamsCall] = []
        value = arg.value
        direct = _params_call(value)
        if direct is not None:
            found.append(direct)
        elif isinstance(value, (cst.List, cst.Tuple)):
            for el in value.elements:
                if isinstance(el.value, cst.Dict):
                    for item in el.value.elements:
                        if (
                            isinstance(item, cst.DictElement)
                            and isinstance(item.key, cst.SimpleString)
                            and item.key.evaluated_value == "params"
                        ):
                            p = _params_call(item.value)
                            if p is not None:
                                found.append(p)
        yield OptimizerCall(call, call.qualname.rsplit(".", 1)[-1], found)


def covers(owner: str, subject: str) -> bool:
    """Do ``owner.parameters()`` include the parameters of ``subject``?"""
    return subject == owner or subject.startswith(owner + ".")


def freezes(ctx: "FileContext", scope: Scope) -> list[Freeze]:
    """``requires_grad`` switches in one function, in source order.

    ``m.requires_grad_(False)``, ``m.x.weight.requires_grad = False``, and
    ``p.requires_grad = False`` / ``p.requires_grad_(False)`` for ``p`` iterating over
    ``m.parameters()`` or ``m.named_parameters()`` (the subject is then ``m``)."""
    out: list[Freeze] = []
    for call in scope.calls:
        if call.method != "requires_grad_" or call.receiver is None:
            continue
        arg = argument(call.node, 0, "requires_grad")
        value = True
        if arg is not None:
            if not (isinstance(arg.value, cst.Name) and arg.value.value in ("True", "False")):
                continue
            value = arg.value.value == "True"
        subject = _subject(ctx, call.receiver, scope, call.stmt.index)
        if subject is not None:
            out.append(Freeze(subject, call.stmt.index, value, call.node))
    for stmt in scope.statements:
        node = stmt.node
        if not isinstance(node, cst.SimpleStatementLine):
            continue
        for small in node.body:
            if not isinstance(small, cst.Assign) or not isinstance(small.value, cst.Name):
                continue
            if small.value.value not in ("True", "False"):
                continue
            for t in small.targets:
                target = t.target
                if isinstance(target, cst.Attribute) and target.attr.value == "requires_grad":
                    subject = _subject(ctx, target.value, scope, stmt.index)
                    if subject is not None:
                        out.append(Freeze(subject, stmt.index, small.value.value == "True", small))
    out.sort(key=lambda f: f.index)
    return out


@dataclasses.dataclass
class ClassFreeze:
    """``requires_grad`` switched in the constructor of the object's class (this file or
    another): ``suffix`` is the attribute path below the object (``""`` for all of it)."""

    suffix: str
    value: bool
    #: where, for a message: ``line 12`` or ``FineTuner.__init__() in model.py:7``
    where: str
    related: tuple = ()


def construction_freezes(ctx: "FileContext", obj: cst.BaseExpression, scope: Scope, at: int) -> list[ClassFreeze]:
    """The ``requires_grad`` switches the constructor of ``obj``'s class makes, in order."""
    source = ctx.dataflow.constructor_source(obj, scope, at)
    if source is None:
        return []
    remote = source.remote
    if remote is not None and getattr(remote, "kind", None) == "instance":
        project = ctx.crossfile.project
        out = []
        for e in project.function_effects(remote.module, f"{remote.name}.__init__", 2):
            if e.kind in ("freeze", "unfreeze") and e.subject is not None and e.subject[0] == "self":
                out.append(ClassFreeze(e.subject[1], e.kind == "unfreeze", str(e.evidence),
                                       ((e.evidence.path, e.evidence.line, "requires_grad switched here"),)))
        return out
    if not isinstance(source.node, cst.Call) or not isinstance(source.node.func, cst.Name):
        return []
    cls = ctx.modules.local_class(source.node.func.value)
    init = cls.init if cls is not None else None
    if init is None or not init.params:
        return []
    me = init.params[0]
    out = []
    for f in freezes(ctx, init):
        if f.subject == me or f.subject.startswith(me + "."):
            line = ctx.position(f.node).start.line
            out.append(ClassFreeze(f.subject[len(me):], f.value, f"{cls.name}.__init__() at line {line}"))  # type: ignore[union-attr]
    return out


def _subject(ctx: "FileContext", expr: cst.BaseExpression, scope: Scope, at: int) -> str | None:
    if isinstance(expr, cst.Name):
        a = ctx.dataflow.reaching(expr.value, scope, at)
        if a is not None and a.kind == "for" and isinstance(a.stmt.node, cst.For):
            it = a.stmt.node.iter
            if (
                isinstance(it, cst.Call)
                and isinstance(it.func, cst.Attribute)
                and it.func.attr.value in ("parameters", "named_parameters", "modules", "children")
            ):
                return dotted(it.func.value)
            return None
        if a is not None and a.kind in ("param", "assign"):
            return expr.value
        return None
    return dotted(expr)
