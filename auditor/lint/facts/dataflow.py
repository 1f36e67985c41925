"""Value provenance: where does the value of an expression come from?

``sources(expr)`` follows a value backwards through assignments, tuple unpacking, ``self.``
attributes set in ``__init__``, value-preserving tensor methods (``.float()``, ``.view()``),
calls of local functions (their ``return``), and calls of local ``nn.Module`` instances (their
``forward``'s ``return``) or ``nn.Sequential`` containers (their last layer), and stops at the
producing call. Every step is syntactic and conservative: when the code does not say, the
answer is an ``unknown`` source and rules stay silent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterator

import libcst as cst

from torch_audit.lint.facts.index import Assignment, Scope
from torch_audit.lint.facts.method_kinds import MODULE_SELF_METHODS, TRANSPARENT_METHODS
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

_MAX_DEPTH = 12

Element = int | str | None


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """What produced a value.

    kind:
      - ``call``: a function or method call (``node`` is the :class:`cst.Call`); ``qualname`` is
        its resolved name, ``method`` the attribute name of a method call;
      - ``module``: a module object was applied; ``node`` is the call that *constructed* it
        (``nn.Softmax(dim=1)``), ``qualname`` the constructor's name;
      - ``param``: a parameter of the enclosing function (``name``);
      - ``literal``: a literal or other self-evident expression (``node``);
      - ``unknown``: the code does not say.

    A source found beyond the file (a class or helper of another module, a call site that
    binds a parameter) has ``evidence`` (where it is, for the message) and no ``node`` of this
    file; ``via`` is the call site it rests on.
    """

    kind: str
    node: cst.CSTNode | None = None
    scope: Scope | None = None
    qualname: str | None = None
    method: str | None = None
    name: str | None = None
    #: for an object found in another file or through a call site: what the project knows of it
    #: (a :class:`torch_audit.lint.project.model.Obj`)
    remote: object | None = None
    #: where in the project the fact was found (``node`` is then None or in this file)
    evidence: object | None = None
    #: the call site (:class:`torch_audit.lint.project.model.CallSite`) a parameter's value
    #: was taken from
    via: object | None = None
    #: for arithmetic or a comparison found beyond the file: the sources of its operands
    operands: tuple = ()

    def is_module(self, *names: str) -> bool:
        return self.kind == "module" and self.qualname in names


UNKNOWN = Source("unknown")


class Dataflow:
    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx

    @property
    def cross(self):
        return self.ctx.crossfile

    # -- public API --------------------------------------------------------------------------
    def sources(self, expr: cst.BaseExpression, scope: Scope, at: int) -> list[Source]:
        """Producers of ``expr``'s value when evaluated at statement index ``at`` in ``scope``."""
        return list(self._sources(expr, scope, at, None, 0, set()))

    def constructor(self, expr: cst.BaseExpression, scope: Scope, at: int) -> cst.Call | None:
        """The call that built the object ``expr`` refers to (``criterion`` →
        ``nn.CrossEntropyLoss()``), when provenance gives exactly one."""
        found = [
            s for s in self._object_sources(expr, scope, at, 0, set()) if s.kind == "call"
        ]
        if len(found) == 1 and isinstance(found[0].node, cst.Call):
            return found[0].node
        return None

    def constructor_source(self, expr: cst.BaseExpression, scope: Scope, at: int) -> Source | None:
        found = [s for s in self._object_sources(expr, scope, at, 0, set()) if s.kind == "call"]
        return found[0] if len(found) == 1 else None

    def reaching(self, name: str, scope: Scope, at: int) -> Assignment | None:
        target = scope.lookup_scope(name) or scope
        if target is not scope:
            # a module-level (or enclosing) definition: the last one anywhere before the use
            # cannot be ordered against the use; take the single definition only
            defs = [a for a in target.assignments.get(name, []) if a.kind not in ("import",)]
            return defs[0] if len(defs) == 1 else None
        found = scope.reaching(name, at)
        if found is None:
            defs = scope.assignments.get(name, [])
            # a parameter has index -1 and always reaches
            params = [a for a in defs if a.kind == "param"]
            return params[0] if params else None
        return found

    # -- implementation ----------------------------------------------------------------------
    def _object_sources(self, expr, scope: Scope, at: int, depth: int, seen: set) -> Iterator[Source]:
        if depth > _MAX_DEPTH:
            yield UNKNOWN
            return
        if isinstance(expr, (cst.Name, cst.Attribute)):
            found = self._definition(expr, scope, at, seen, (id(scope), dotted(expr), at))
            if found is None:
                yield UNKNOWN
                return
            a, where = found
            yield from self._from_assignment(a, where, depth, seen, objects=True)
            return
        if isinstance(expr, cst.Call):
            call = self.ctx.call(expr)
            qualname = call.qualname if call else scope.qualname(expr.func)
            func = expr.func
            if qualname is None and isinstance(func, cst.Attribute) and func.attr.value in MODULE_SELF_METHODS:
                # Net().to(device), model.cuda().eval(): the module itself
                inner = list(self._object_sources(func.value, scope, at, depth + 1, seen))
                if inner and all(s.kind == "call" for s in inner):
                    yield from inner
                    return
            if qualname is not None and self.cross.active:
                # a class or a helper of another file builds it: Classifier(20, 5), conv3x3(c, c)
                objs = self._remote_objects(qualname, expr, scope)
                if objs is not None:
                    yield from objs
                    return
            yield Source("call", expr, scope, qualname, call.method if call else None)
            return
        yield Source("literal", expr, scope)

    def _remote_objects(self, qualname: str, expr: cst.Call, scope: Scope) -> list[Source] | None:
        """The objects a call of a project class or function of another file builds."""
        cross = self.cross
        hit = cross.resolve(qualname)
        if hit is None:
            return None
        if hit[0] == "class":
            return [cross.object_source(cross.instance(hit, expr))]
        if hit[0] != "function":
            return None
        return cross.returned_objects(hit, expr, scope)

    def _definition(self, expr, scope: Scope, at: int, seen: set, key: tuple) -> tuple[Assignment, Scope] | None:
        """The one assignment that gives a name (reaching ``at``) or a ``self.`` attribute (set
        exactly once in the class) its value, with the scope it happens in; None when the code
        does not say, or when the same question is already being followed (a cycle)."""
        if isinstance(expr, cst.Name):
            if key in seen:
                return None
            seen.add(key)
            a = self.reaching(expr.value, scope, at)
            return (a, scope) if a is not None else None
        attr = self._self_attribute(expr, scope)
        if attr is None:
            return None
        cls, name = attr
        defs = cls.attributes.get(name, [])
        return (defs[0], defs[0].stmt.scope) if len(defs) == 1 else None

    def _self_attribute(self, expr: cst.Attribute, scope: Scope) -> tuple[Scope, str] | None:
        """``self.x`` inside a method → (class scope, "x")."""
        if not isinstance(expr.value, cst.Name):
            return None
        s: Scope | None = scope
        while s is not None and s.kind == "lambda":
            s = s.parent
        if s is None or s.class_scope is None or not s.params:
            return None
        if expr.value.value != s.params[0]:
            return None
        return s.class_scope, expr.attr.value

    def _from_assignment(self, a: Assignment, scope: Scope, depth: int, seen: set, *, objects: bool,
                         element: Element = None) -> Iterator[Source]:
        if a.kind == "param":
            param_scope = a.stmt.scope if a.stmt else scope
            bound = None
            if self.cross.active and depth < _MAX_DEPTH:
                bound = self.cross.param_sources(param_scope, a.name, element, objects=objects)
            if bound:
                # what the project's call sites pass (a finding names the call site it rests on)
                yield from bound
            yield Source("param", a.target, param_scope, name=a.name)
            return
        if a.kind == "import" and self.cross.active:
            found = self.cross.imported_objects(a.name, scope) if objects else None
            if found:
                yield from found
                return
        if a.value is None or a.stmt is None:
            yield UNKNOWN
            return
        where = a.stmt.scope
        if a.kind in ("assign", "walrus"):
            if objects:
                yield from self._object_sources(a.value, where, a.index, depth + 1, seen)
            else:
                yield from self._sources(a.value, where, a.index, element, depth + 1, seen)
            return
        if a.kind == "unpack" and not a.starred:
            if objects:
                yield UNKNOWN
                return
            yield from self._sources(a.value, where, a.index, a.element, depth + 1, seen)
            return
        if a.kind == "with" and not objects:
            yield UNKNOWN
            return
        yield UNKNOWN

    def _sources(self, expr, scope: Scope, at: int, element: Element, depth: int, seen: set) -> Iterator[Source]:
        if depth > _MAX_DEPTH:
            yield UNKNOWN
            return
        if isinstance(expr, cst.Name):
            if expr.value in ("None", "True", "False"):
                yield Source("literal", expr, scope)
                return
        if isinstance(expr, (cst.Name, cst.Attribute)):
            found = self._definition(expr, scope, at, seen, (id(scope), dotted(expr), at, element))
            if found is None:
                yield UNKNOWN
                return
            a, where = found
            yield from self._from_assignment(a, where, depth, seen, objects=False, element=element)
            return
        if isinstance(expr, (cst.Tuple, cst.List)) and element is not None and isinstance(element, int):
            elements = expr.elements
            if any(isinstance(e, cst.StarredElement) for e in elements[: element + 1]):
                yield UNKNOWN
                return
            if 0 <= element < len(elements):
                yield from self._sources(elements[element].value, scope, at, None, depth + 1, seen)
            else:
                yield UNKNOWN
            return
        if isinstance(expr, cst.Dict) and isinstance(element, str):
            for el in expr.elements:
                if isinstance(el, cst.DictElement) and _string_value(el.key) == element:
                    yield from self._sources(el.value, scope, at, None, depth + 1, seen)
                    return
            yield UNKNOWN
            return
        if isinstance(expr, cst.Subscript):
            index = _constant_index(expr)
            if index is not None and element is None:
                yield from self._sources(expr.value, scope, at, index, depth + 1, seen)
            else:
                # slicing a tensor keeps what kind of values it holds
                for s in self._sources(expr.value, scope, at, None, depth + 1, seen):
                    yield s
            return
        if isinstance(expr, cst.Call):
            yield from self._call_sources(expr, scope, at, element, depth, seen)
            return
        yield Source("literal", expr, scope)

    def _call_sources(self, expr: cst.Call, scope: Scope, at: int, element: Element, depth: int, seen: set):
        call = self.ctx.call(expr)
        qualname = call.qualname if call else scope.qualname(expr.func)
        func = expr.func
        if isinstance(func, cst.Attribute) and qualname is None:
            method = func.attr.value
            if method in TRANSPARENT_METHODS:
                yield from self._sources(func.value, scope, at, element, depth + 1, seen)
                return
            if method == "forward" or method == "__call__":
                yield from self._apply_sources(func.value, expr, scope, at, element, depth, seen)
                return
            # self.helper(...) → a method of this class
            attr = self._self_attribute(func, scope)
            if attr is not None:
                cls, name = attr
                method_scope = cls.functions().get(name)
                if method_scope is not None and name not in cls.attributes:
                    yield from self._return_sources(method_scope, element, depth, seen)
                    return
                if name in cls.attributes:
                    yield from self._apply_sources(func, expr, scope, at, element, depth, seen)
                    return
            yield Source("call", expr, scope, None, method)
            return
        if qualname is not None:
            if self.cross.active:
                remote = self.cross.call_sources(qualname, expr, scope, element)
                if remote is not None:
                    yield from remote
                    return
            yield Source("call", expr, scope, qualname, func.attr.value if isinstance(func, cst.Attribute) else None)
            return
        if isinstance(func, cst.Name):
            # a local function, or a local object being applied
            target = scope.lookup_scope(func.value)
            if target is not None:
                defs = target.assignments.get(func.value, [])
                if len(defs) == 1 and defs[0].kind == "def":
                    fn = target.functions().get(func.value)
                    if fn is not None:
                        yield from self._return_sources(fn, element, depth, seen)
                        return
                if len(defs) == 1 and defs[0].kind == "class":
                    yield Source("call", expr, scope, None, None, name=func.value)
                    return
            yield from self._apply_sources(func, expr, scope, at, element, depth, seen)
            return
        if isinstance(func, cst.Call):
            # Net()(x), nn.CrossEntropyLoss()(...): a module built and applied at once
            yield from self._apply_sources(func, expr, scope, at, element, depth, seen)
            return
        yield UNKNOWN

    def _apply_sources(self, obj, call_node, scope: Scope, at: int, element: Element, depth: int, seen: set):
        """``obj(...)`` where ``obj`` is a module instance: its forward's result."""
        for origin in self._object_sources(obj, scope, at, depth + 1, seen):
            if origin.kind == "call" and origin.remote is not None:
                # an object the project knows: built in another file, or passed by a caller
                for s in self.cross.output(origin.remote, element):
                    yield dataclasses.replace(s, via=origin.via) if origin.via is not None else s
                continue
            if origin.kind != "call" or not isinstance(origin.node, cst.Call):
                yield UNKNOWN
                continue
            yield from self.module_output(origin, element, depth + 1, seen)

    def module_output(self, ctor: Source, element: Element = None, depth: int = 0, seen: set | None = None):
        """Sources of the output of a module built by the constructor call ``ctor``."""
        seen = seen if seen is not None else set()
        node = ctor.node
        assert isinstance(node, cst.Call)
        qualname = ctor.qualname
        if qualname in ("torch.nn.Sequential",):
            layers = [a for a in node.args if a.keyword is None and not a.star]
            if not layers or node.args[-1].star:
                yield UNKNOWN
                return
            last = layers[-1].value
            if isinstance(last, cst.Call):
                last_scope = ctor.scope or self.ctx.module_scope
                inner = Source("call", last, last_scope, last_scope.qualname(last.func))
                yield from self.module_output(inner, element, depth + 1, seen)
            else:
                yield UNKNOWN
            return
        if qualname is not None:
            if self.cross.active:
                remote = self.cross.module_output(qualname, node, element)
                if remote is not None:
                    yield from remote
                    return
            yield Source("module", node, ctor.scope, qualname)
            return
        # a class defined in this file
        name = dotted(node.func)
        cls = self.ctx.modules.local_class(name) if name else None
        if cls is not None and cls.forward is not None:
            yield from self._return_sources(cls.forward, element, depth + 1, seen)
            return
        yield UNKNOWN

    def _return_sources(self, fn: Scope, element: Element, depth: int, seen: set):
        key = ("return", id(fn), element)
        if key in seen or depth > _MAX_DEPTH:
            yield UNKNOWN
            return
        seen.add(key)
        if not fn.returns:
            yield UNKNOWN
            return
        for stmt, value in fn.returns:
            if value is None:
                yield Source("literal", None, fn)
                continue
            yield from self._sources(value, fn, stmt.index + 1, element, depth + 1, seen)


def _string_value(node: cst.BaseExpression | None) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _constant_index(sub: cst.Subscript) -> Element:
    if len(sub.slice) != 1:
        return None
    item = sub.slice[0].slice
    if not isinstance(item, cst.Index):
        return None
    value = item.value
    if isinstance(value, cst.Integer):
        return int(value.value, 0)
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus) and isinstance(value.expression, cst.Integer):
        return None  # out[-1]: a row of a tensor or the last element; not a tuple position we track
    s = _string_value(value)
    return s
