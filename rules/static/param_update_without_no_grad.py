import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import PARAMETER, argument, dotted, tensors
from torch_audit.rule import StaticRule

_INPLACE_UPDATES = frozenset(
    {"add_", "sub_", "mul_", "div_", "addcdiv_", "addcmul_", "lerp_", "copy_", "clamp_"}
)
_AUG_OPS = {"SubtractAssign": "-=", "AddAssign": "+=", "MultiplyAssign": "*=", "DivideAssign": "/="}


class ParamUpdateWithoutNoGrad(StaticRule):
    """## What it does
    Finds in-place updates of model parameters (`p -= lr * p.grad`, `p.add_(...)`,
    `p.copy_(...)`) made while autograd is recording, outside `torch.no_grad()`.

    ## Why is this bad?
    A parameter is a leaf tensor that requires grad. Updating it in place with grad mode on
    fails with `RuntimeError: a leaf Variable that requires grad is being used in an in-place
    operation`; for a parameter that does not require grad at that moment the update is recorded
    in the graph of the next step. Hand-written optimizer steps belong under `torch.no_grad()`
    (or use `p.data`, or better, a `torch.optim` optimizer).

    ## Known problems
    Only parameters the code shows are reported: elements of `m.parameters()`, the second element
    of `m.named_parameters()`, `group["params"]` of `optimizer.param_groups`, and
    `nn.Parameter` attributes. An update in a function with any decorator, or in a helper whose
    callers in the file all run it under `no_grad`, is not reported. Updates through `p.data`
    are deliberately outside this rule. Parameters that never require grad are not reported:
    `nn.Parameter(..., requires_grad=False)`, a parameter whose every `requires_grad` switch
    in the file turns it off, and updates under `if not p.requires_grad:`.

    ## References
    - [torch.no_grad](https://pytorch.org/docs/stable/generated/torch.no_grad.html)
    - [Autograd mechanics: in-place operations](https://pytorch.org/docs/stable/notes/autograd.html#in-place-operations-with-autograd)
    """

    code = "TA312"
    name = "param-update-without-no-grad"
    severity = Severity.ERROR
    message = "parameter `{param}` is updated in place (`{op}`) while autograd is recording"
    fix_title = "Wrap the update in `with torch.no_grad():` (or use a torch.optim optimizer)"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list = []
        self._switches: list[tuple[str, bool | None]] | None = None

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        op = _AUG_OPS.get(type(node.operator).__name__)
        if op is None or not isinstance(node.target, (cst.Name, cst.Attribute)):
            return
        self._check(node, node.target, op)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value not in _INPLACE_UPDATES:
            return
        if not isinstance(self.ctx.parent, cst.Expr):
            return  # only update statements
        if not isinstance(func.value, (cst.Name, cst.Attribute)):
            return
        self._check(node, func.value, f".{func.attr.value}()")

    def _check(self, node: cst.CSTNode, target: cst.BaseExpression, op: str) -> None:
        stmt = self.ctx.statement
        if stmt is None or self.ctx.grad_enabled(stmt) is False:
            return
        scope = self.ctx.scope
        self._pending.append((node, target, op, stmt, scope))

    def leave_Module(self, original_node: cst.Module) -> None:
        # decided at the end: callers later in the file must be known
        for node, target, op, stmt, scope in self._pending:
            if tensors(self.ctx).kind(target, scope, stmt.index) != PARAMETER:
                continue
            if self._never_requires_grad(target, scope, stmt.index) or _under_no_grad_test(stmt, target):
                continue
            if self.ctx.grad_enabled(stmt) is None and not self._grad_surely_on(scope):
                continue
            self.report(node, param=dotted(target) or self.ctx.code(target), op=op)

    def _never_requires_grad(self, target: cst.BaseExpression, scope, at: int) -> bool:
        """``nn.Parameter(..., requires_grad=False)``, or a parameter switched off with
        ``.requires_grad_(False)`` / ``.requires_grad = False`` and never switched back: a
        tensor autograd never records, updated in place legitimately."""
        src = self.ctx.dataflow.constructor_source(target, scope, at)
        if src is not None and src.qualname in _PARAMETER_CLASSES and isinstance(src.node, cst.Call):
            flag = argument(src.node, 1, "requires_grad")
            if flag is not None and isinstance(flag.value, cst.Name) and flag.value.value == "False":
                return True
        name = dotted(target)
        if name is None:
            return False
        if self._switches is None:
            self._switches = _grad_switches(self.ctx.module)
        switches = [value for subject, value in self._switches if subject == name]
        return bool(switches) and all(v is False for v in switches)

    def _grad_surely_on(self, scope) -> bool:
        """No decorator anywhere up the function chain, and not every caller uses no_grad."""
        s = scope
        fn = None
        while s is not None and s.kind in ("function", "lambda"):
            if s.decorators:
                return False
            fn = fn or (s if s.kind == "function" else None)
            s = s.parent
        if fn is None:
            return True
        callers = self.ctx.training.callers(fn)
        if callers and all(self.ctx.grad_enabled(c.stmt) is False for c in callers):
            return False
        return True


_PARAMETER_CLASSES = frozenset({"torch.nn.Parameter", "torch.nn.parameter.Parameter"})


def _grad_switches(module: cst.Module) -> list[tuple[str, bool | None]]:
    """Every ``x.requires_grad_(flag)`` and ``x.requires_grad = flag`` of the file:
    (``x`` as written, the literal flag or None)."""
    out: list[tuple[str, bool | None]] = []
    stack: list[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "requires_grad_":
            subject = dotted(node.func.value)
            flag = argument(node, 0, "requires_grad")
            if subject is not None:
                out.append((subject, True if flag is None else _literal_bool(flag.value)))
        elif isinstance(node, cst.Assign):
            for t in node.targets:
                if isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad":
                    subject = dotted(t.target.value)
                    if subject is not None:
                        out.append((subject, _literal_bool(node.value)))
        stack.extend(node.children)
    return out


def _literal_bool(expr: cst.BaseExpression) -> bool | None:
    if isinstance(expr, cst.Name) and expr.value in ("True", "False"):
        return expr.value == "True"
    return None


def _under_no_grad_test(stmt, target: cst.BaseExpression) -> bool:
    """``if not p.requires_grad: p.add_(...)``: the update runs only for tensors without grad."""
    name = dotted(target)
    for branch in stmt.branches:
        test = getattr(branch, "test", None)
        if (
            isinstance(test, cst.UnaryOperation)
            and isinstance(test.operator, cst.Not)
            and isinstance(test.expression, cst.Attribute)
            and test.expression.attr.value == "requires_grad"
            and dotted(test.expression.value) == name
        ):
            return True
    return False
