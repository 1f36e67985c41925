import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import Scope, dotted, is_layer_name, is_real_module, is_stateless_layer
from torch_audit.rule import StaticRule

#: calls that register the modules of a list (so a plain list beside them is harmless)
REGISTERING = frozenset(
    {"torch.nn.ModuleList", "torch.nn.ModuleDict", "torch.nn.Sequential", "torch.nn.ParameterList",
     "torch.nn.ParameterDict"}
)
_ADDERS = ("append", "extend", "insert", "add")


class ModulesInPlainList(StaticRule):
    """## What it does
    Finds an `nn.Module` whose `__init__` keeps submodules (layers with parameters, buffers or
    train/eval behaviour) in a plain `list`, `tuple` or `dict` attribute: a literal, a
    comprehension, or an empty container filled with `append`/`extend`/`[key] = ...`.

    ## Why is this bad?
    `nn.Module` registers only modules assigned directly as attributes or held by
    `nn.ModuleList`/`nn.ModuleDict`. Layers in a plain container are invisible to
    `.parameters()` (the optimizer never updates them), `.to(device)`/`.cuda()` (they stay on
    the CPU), `state_dict()` (they are not saved) and `.eval()` (their Dropout and BatchNorm stay
    in training mode). The model still runs, so the bug shows only as poor training or a
    checkpoint that does not restore.

    ## Known problems
    Lists of stateless layers (`nn.ReLU`, pooling) lose nothing and are not reported; neither
    is a list whose modules are also registered through `nn.ModuleList(...)`,
    `nn.Sequential(*...)`, `add_module` or `setattr`, nor a container of existing objects (a
    common way to hide a teacher model from `.parameters()` on purpose).

    ## References
    - [torch.nn.ModuleList](https://pytorch.org/docs/stable/generated/torch.nn.ModuleList.html)
    - [torch.nn.ModuleDict](https://pytorch.org/docs/stable/generated/torch.nn.ModuleDict.html)
    """

    code = "TA203"
    name = "modules-in-plain-list"
    severity = Severity.ERROR
    message = (
        "self.{attr} keeps {what} in a plain {kind}; they are invisible to .parameters(), "
        ".to(), state_dict() and eval()"
    )
    fix_title = "Use nn.ModuleList (nn.ModuleDict for a dict)"

    def leave_Module(self, node: cst.Module) -> None:
        for cls in self.ctx.modules.classes.values():
            init = cls.init
            if init is None or not init.params or not is_real_module(self.ctx, cls):
                continue
            _ClassCheck(self, cls, init).run()


class _ClassCheck:
    def __init__(self, rule: ModulesInPlainList, cls, init: Scope) -> None:
        self.rule = rule
        self.ctx = rule.ctx
        self.cls = cls
        self.init = init
        self.me = init.params[0]
        self.registered_text = self._registered_expressions()
        self.uses_setattr = any(
            (c.method in ("add_module", "register_module") and c.receiver is not None)
            or (isinstance(c.node.func, cst.Name) and c.node.func.value == "setattr")
            for scope in cls.scope.walk() for c in scope.calls
        )

    def _registered_expressions(self) -> set[str]:
        """Dotted names passed (possibly starred, or inside a comprehension) to a registering
        container anywhere in the class."""
        out: set[str] = set()
        for scope in self.cls.scope.walk():
            for c in scope.calls:
                if c.qualname in REGISTERING or (c.method == "update" and c.receiver is not None):
                    for arg in c.node.args:
                        for sub in _walk(arg.value):
                            name = dotted(sub) if isinstance(sub, (cst.Name, cst.Attribute)) else None
                            if name:
                                out.add(name)
        return out

    # -- what is a module constructor --------------------------------------------------------
    def module_ctor(self, expr: cst.BaseExpression, scope: Scope, at: int) -> str | None:
        """The name of the stateful module class ``expr`` builds, else None."""
        if isinstance(expr, cst.Name):
            src = self.ctx.dataflow.constructor_source(expr, scope, at)
            if src is None or not isinstance(src.node, cst.Call):
                return None
            expr = src.node
        if not isinstance(expr, cst.Call):
            return None
        q = scope.qualname(expr.func)
        if q is not None:
            if is_layer_name(q) and not is_stateless_layer(q):
                return "nn." + q.rsplit(".", 1)[-1]
            return None
        name = dotted(expr.func)
        local = self.ctx.modules.local_class(name)
        if local is not None and is_real_module(self.ctx, local):
            return name
        return None

    def held_modules(self, expr: cst.BaseExpression, scope: Scope, at: int) -> tuple[str, str] | None:
        """(kind of container, module name) when ``expr`` is a container literal holding
        module constructors."""
        if isinstance(expr, (cst.List, cst.Tuple, cst.Set)):
            kind = {cst.List: "list", cst.Tuple: "tuple", cst.Set: "set"}[type(expr)]
            for el in expr.elements:
                if not isinstance(el, cst.StarredElement):
                    m = self.module_ctor(el.value, scope, at) if isinstance(el.value, cst.Call) else None
                    if m:
                        return kind, m
            return None
        if isinstance(expr, (cst.ListComp, cst.SetComp, cst.GeneratorExp)):
            m = self.module_ctor(expr.elt, scope, at) if isinstance(expr.elt, cst.Call) else None
            return ("list", m) if m else None
        if isinstance(expr, cst.Dict):
            for el in expr.elements:
                if isinstance(el, cst.DictElement) and isinstance(el.value, cst.Call):
                    m = self.module_ctor(el.value, scope, at)
                    if m:
                        return "dict", m
            return None
        if isinstance(expr, cst.DictComp):
            m = self.module_ctor(expr.value, scope, at) if isinstance(expr.value, cst.Call) else None
            return ("dict", m) if m else None
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Multiply):
            return self.held_modules(expr.left, scope, at)
        return None

    # -- the check ---------------------------------------------------------------------------
    def run(self) -> None:
        if self.uses_setattr:
            return  # modules registered by name (add_module/setattr), often the listed ones
        attributes = self.cls.scope.attributes
        for attr, defs in attributes.items():
            if f"{self.me}.{attr}" in self.registered_text or "self." + attr in self.registered_text:
                continue
            if any(
                a.kind == "assign" and isinstance(a.value, cst.Call) and a.stmt is not None
                and a.stmt.scope.qualname(a.value.func) in REGISTERING
                for a in defs
            ):
                continue
            mine = [a for a in defs if a.stmt is not None and a.stmt.scope is self.init and a.kind == "assign"]
            if not mine:
                continue
            last = max(mine, key=lambda a: a.index)
            found = self.check_value(last.value, f"{self.me}.{attr}", last.index)
            if found is not None:
                kind, what = found
                self.rule.report(last.value, attr=attr, what=what, kind=kind)

    def check_value(self, value: cst.BaseExpression, holder: str, at: int) -> tuple[str, str] | None:
        held = self.held_modules(value, self.init, at)
        if held is not None:
            kind, m = held
            return kind, f"{m} layers"
        empty = _empty_container(value)
        if empty is not None:
            m = self.added_modules(holder)
            return (empty, f"{m} layers") if m else None
        if isinstance(value, cst.Name) and value.value not in self.registered_text:
            defs = [a for a in self.init.assignments.get(value.value, []) if a.kind == "assign"]
            if len(defs) != 1:
                return None
            if defs[0].value is value or defs[0].index >= at:
                return None
            return self.check_value(defs[0].value, value.value, defs[0].index)
        return None

    def added_modules(self, holder: str) -> str | None:
        """A module constructor added to the container ``holder`` in ``__init__``."""
        for c in self.init.calls:
            if c.method in _ADDERS and c.receiver is not None and dotted(c.receiver) == holder:
                for arg in c.node.args:
                    v = arg.value
                    if c.method == "extend":
                        held = self.held_modules(v, c.scope, c.stmt.index)
                        if held:
                            return held[1]
                        continue
                    m = self.module_ctor(v, c.scope, c.stmt.index)
                    if m:
                        return m
        for stmt in self.init.statements:
            node = stmt.node
            if not isinstance(node, cst.SimpleStatementLine):
                continue
            for small in node.body:
                if isinstance(small, cst.Assign):
                    for t in small.targets:
                        if isinstance(t.target, cst.Subscript) and dotted(t.target.value) == holder:
                            m = self.module_ctor(small.value, self.init, stmt.index)
                            if m:
                                return m
                if isinstance(small, cst.AugAssign) and dotted(small.target) == holder:
                    held = self.held_modules(small.value, self.init, stmt.index)
                    if held:
                        return held[1]
        return None


def _empty_container(value: cst.BaseExpression) -> str | None:
    if isinstance(value, cst.List) and not value.elements:
        return "list"
    if isinstance(value, cst.Dict) and not value.elements:
        return "dict"
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and not value.args:
        if value.func.value in ("list", "dict"):
            return value.func.value
    return None


def _walk(node: cst.CSTNode):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)
