import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.layers import is_layer_name, is_real_module, is_stateless_layer
from torch_audit.lint.facts.names import dotted
from torch_audit.rule import StaticRule

#: methods that reach submodules without naming them
_REFLECTIVE = frozenset(
    {"children", "named_children", "modules", "named_modules", "_modules", "__dict__", "get_submodule"}
)


class UnusedSubmodule(StaticRule):
    """## What it does
    Finds a submodule assigned in `__init__` (`self.head = nn.Linear(...)`) that nothing in the
    file ever reads: no `self.head` or `x.head` anywhere, no string naming it, no reflective
    access to the module's children in the class.

    ## Why is this bad?
    An unused layer still owns parameters: they are saved, moved and given to the optimizer but
    never receive a gradient, which wastes memory and makes `DistributedDataParallel` fail
    ("Expected to have finished reduction in the prior iteration") unless
    `find_unused_parameters=True`, itself a slowdown. Often it is the sign of a forgotten step
    in `forward`.

    ## Known problems
    Preview: the submodule may be used from another file (a subclass, a training script, a
    checkpoint loader), which a per-file linter cannot see. Classes that reach their children
    reflectively (`getattr(self, name)` with a computed name, `self.children()`,
    `self.named_modules()`, `self._modules`) are skipped, as are classes that define no
    `forward`.

    ## References
    - [torch.nn.parallel.DistributedDataParallel (find_unused_parameters)](https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html)
    """

    code = "TA206"
    name = "unused-submodule"
    severity = Severity.WARNING
    status = "preview"
    message = "self.{attr} ({layer}) is built in {cls}.__init__ but never used in this file; {why}"
    fix_title = "Use it in forward, or remove it"

    def __init__(self, ctx, options=None) -> None:
        super().__init__(ctx, options)
        self._attr_uses: dict[str, int] = {}
        self._strings: set[str] = set()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        name = node.attr.value
        self._attr_uses[name] = self._attr_uses.get(name, 0) + 1

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        value = node.evaluated_value
        if isinstance(value, str) and len(value) < 200:
            self._strings.add(value)

    def leave_Module(self, node: cst.Module) -> None:
        strings = " ".join(self._strings)
        for cls in self.ctx.modules.classes.values():
            init = cls.init
            if init is None or not init.params or not is_real_module(self.ctx, cls):
                continue
            if cls.forward is None and not cls.lightning:
                continue
            if _reflective(cls):
                continue
            for attr, defs in cls.scope.attributes.items():
                mine = [a for a in defs if a.kind == "assign" and a.stmt is not None and a.stmt.scope is init]
                if not mine:
                    continue
                first = min(mine, key=lambda a: a.index)
                if not isinstance(first.value, cst.Call):
                    continue
                layer = self._layer(first.value, init)
                if layer is None:
                    continue
                targets = sum(1 for a in defs if isinstance(a.target, cst.Attribute))
                if self._attr_uses.get(attr, 0) > targets or attr in strings:
                    continue
                q = init.qualname(first.value.func)
                stateless = is_stateless_layer(q) or (q or "").startswith("torch.nn.Dropout")
                why = "is a step missing from forward?" if stateless else "its parameters never get a gradient"
                self.report(first.stmt.node, attr=attr, layer=layer, cls=cls.name, why=why)

    def _layer(self, ctor: cst.Call, scope) -> str | None:
        q = scope.qualname(ctor.func)
        if q is not None:
            return "nn." + q.rsplit(".", 1)[-1] if is_layer_name(q) else None
        name = dotted(ctor.func)
        local = self.ctx.modules.local_class(name)
        if local is not None and is_real_module(self.ctx, local):
            return name
        return None


def _reflective(cls) -> bool:
    for scope in cls.scope.walk():
        for call in scope.calls:
            if call.method in _REFLECTIVE and call.receiver is not None:
                return True
            if isinstance(call.node.func, cst.Name) and call.node.func.value in ("getattr", "vars", "setattr", "hasattr"):
                return True
            # `helper(self, ...)`: a function (maybe of another file) that reads the attributes
            if call.method != "super" and scope.kind == "function" and scope.params:
                me = scope.params[0]
                if any(isinstance(a.value, cst.Name) and a.value.value == me for a in call.node.args):
                    return True
    stack: list[cst.CSTNode] = [cls.node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Attribute) and n.attr.value in _REFLECTIVE:
            return True
        stack.extend(n.children)
    return False
