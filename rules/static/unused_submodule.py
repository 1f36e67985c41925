import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import LIGHTNING_BASES, dotted, is_layer_name, is_real_module, is_stateless_layer
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
    checkpoint loader), which a per-file linter cannot see; so only classes no other file can
    reach are checked: private classes (`_Name`), classes defined inside a function, and the
    classes of a script (a file with an `if __name__ == "__main__":` block). Subclasses of torch
    layers or framework models (other than `nn.Module` and Lightning) are skipped: inherited
    methods read attributes by name (`nn.TransformerEncoderLayer._ff_block` uses `linear1`).
    Classes that reach their children reflectively (`getattr(self, name)` with a computed name,
    `self.children()`, `self.named_modules()`, `self._modules`) are skipped, as are classes that
    define no `forward`, and chained assignments (`self.a = self.b = nn.Linear(...)`).

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
            if self._inherits_torch_methods(cls) or not self._evidence_complete(cls):
                continue
            for attr, defs in cls.scope.attributes.items():
                mine = [a for a in defs if a.kind == "assign" and a.stmt is not None and a.stmt.scope is init]
                if not mine:
                    continue
                first = min(mine, key=lambda a: a.index)
                if not isinstance(first.value, cst.Call):
                    continue
                if _chained(first.stmt.node):
                    continue  # `self.a = self.b = nn.Linear(...)`: one module, two names
                layer = self._layer(first.value, init)
                if layer is None:
                    continue
                targets = sum(1 for a in defs if isinstance(a.target, cst.Attribute))
                if self._attr_uses.get(attr, 0) > targets or attr in strings:
                    continue
                q = init.qualname(first.value.func)
                if _has_parameters(q):
                    why = "its parameters never get a gradient"
                elif q is not None:
                    why = "is a step missing from forward?"  # an activation, a pool, a loss: no parameters
                else:
                    why = "it is saved and moved with the model but never runs"
                self.report(first.stmt.node, attr=attr, layer=layer, cls=cls.name, why=why)

    def _inherits_torch_methods(self, cls, seen: frozenset[str] = frozenset()) -> bool:
        """A subclass of a torch layer (``nn.TransformerEncoderLayer``) or of a framework model
        inherits methods that read attributes by name (``_ff_block`` uses ``linear1``): an
        attribute this file never reads may be read there."""
        scope = cls.scope.parent or cls.scope
        for base in cls.node.bases:
            if base.keyword is not None:
                continue
            q = scope.qualname(base.value)
            if q is not None:
                if q != "torch.nn.Module" and q not in LIGHTNING_BASES:
                    return True
                continue
            name = dotted(base.value)
            local = self.ctx.modules.classes.get(name or "")
            if local is not None and local.name not in seen and local is not cls:
                if self._inherits_torch_methods(local, seen | {cls.name}):
                    return True
        return False

    def _evidence_complete(self, cls) -> bool:
        """Can no other file use the attribute? Only for a class no other file can reach by
        name (private ``_Name``, or defined inside a function) or a class of a script (a file
        with an ``if __name__ == "__main__":`` block); a public class of an importable module
        may be subclassed (``del self.head``) or have its submodules used elsewhere."""
        if cls.name.startswith("_"):
            return True
        parent = cls.scope.parent
        while parent is not None:
            if parent.kind == "function":
                return True
            parent = parent.parent
        return self._is_script()

    def _is_script(self) -> bool:
        for stmt in self.ctx.module.body:
            if isinstance(stmt, cst.If) and "__main__" in self.ctx.code(stmt.test) and "__name__" in self.ctx.code(stmt.test):
                return True
        return False

    def _layer(self, ctor: cst.Call, scope) -> str | None:
        q = scope.qualname(ctor.func)
        if q is not None:
            return "nn." + q.rsplit(".", 1)[-1] if is_layer_name(q) else None
        name = dotted(ctor.func)
        local = self.ctx.modules.local_class(name)
        if local is not None and is_real_module(self.ctx, local):
            return name
        return None


#: torch.nn layers that own parameters (by default)
_PARAMETRIC_PREFIXES = (
    "torch.nn.Linear", "torch.nn.LazyLinear", "torch.nn.Bilinear", "torch.nn.Conv", "torch.nn.LazyConv",
    "torch.nn.ConvTranspose", "torch.nn.LazyConvTranspose", "torch.nn.BatchNorm", "torch.nn.LazyBatchNorm",
    "torch.nn.SyncBatchNorm", "torch.nn.LayerNorm", "torch.nn.GroupNorm", "torch.nn.RMSNorm",
    "torch.nn.InstanceNorm", "torch.nn.LazyInstanceNorm", "torch.nn.LocalResponseNorm", "torch.nn.Embedding",
    "torch.nn.EmbeddingBag", "torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNNCell",
    "torch.nn.LSTMCell", "torch.nn.GRUCell", "torch.nn.MultiheadAttention", "torch.nn.Transformer",
    "torch.nn.PReLU", "torch.nn.Sequential", "torch.nn.ModuleList", "torch.nn.ModuleDict",
)


def _has_parameters(q: str | None) -> bool:
    """Known to hold parameters (containers: assumed, as they exist to hold layers)."""
    if q is None or q == "torch.nn.LocalResponseNorm" or q.startswith("torch.nn.InstanceNorm"):
        return False  # InstanceNorm has none unless affine=True
    return q.startswith(_PARAMETRIC_PREFIXES) and not is_stateless_layer(q)


def _chained(stmt: cst.CSTNode) -> bool:
    if isinstance(stmt, cst.SimpleStatementLine):
        return any(isinstance(s, cst.Assign) and len(s.targets) > 1 for s in stmt.body)
    return False


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
