import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import argument, dotted
from torch_audit.rule import StaticRule

_GRADCHECKS = frozenset(
    {
        "torch.autograd.gradcheck", "torch.autograd.gradgradcheck",
        "torch.autograd.gradcheck.gradcheck", "torch.autograd.gradcheck.gradgradcheck",
    }
)
#: factories whose default dtype is the (float32) default floating dtype
_FLOAT_FACTORIES = frozenset(
    {"randn", "rand", "zeros", "ones", "empty", "full", "linspace", "logspace", "normal", "eye"}
)
_LIKE_FACTORIES = frozenset({"randn_like", "rand_like", "zeros_like", "ones_like", "empty_like", "full_like"})
_DOUBLE = ("float64", "double", "DoubleTensor")
_SINGLE = ("float32", "float16", "bfloat16", "half", "FloatTensor", "HalfTensor")
_KEEP = frozenset({"clone", "detach", "contiguous", "view", "reshape", "cuda", "cpu", "t", "transpose",
                   "permute", "unsqueeze", "squeeze", "requires_grad_", "to", "type"})
_DOUBLE_FLAG = "double"
_SINGLE_FLAG = "single"


class GradcheckSinglePrecision(StaticRule):
    """## What it does
    Finds `torch.autograd.gradcheck`/`gradgradcheck` called on inputs that require grad but are
    created in single (or half) precision: a float factory without `dtype=torch.float64`, with no
    `.double()` or `.to(torch.float64)` on the way.

    ## Why is this bad?
    gradcheck compares analytical gradients with finite differences taken with `eps=1e-6`. In
    float32 the finite differences are dominated by rounding error, so the check fails for
    correct code or passes only with tolerances loose enough to hide real bugs. PyTorch itself
    warns that inputs should be double precision.

    ## Known problems
    Only inputs whose construction is visible in the same function are judged. Calls that pass
    `eps`, `atol` or `rtol` (tolerances chosen on purpose) and files that switch the default dtype
    to float64 (`torch.set_default_dtype(torch.float64)`) are not reported.

    ## References
    - [torch.autograd.gradcheck](https://pytorch.org/docs/stable/generated/torch.autograd.gradcheck.gradcheck.html)
    - [Gradcheck mechanics](https://pytorch.org/docs/stable/notes/gradcheck.html)
    """

    code = "TA315"
    name = "gradcheck-single-precision"
    severity = Severity.WARNING
    message = "{check} input {input} requires grad but is not float64; finite differences in float32 are unreliable"
    fix_title = "Create the input with `dtype=torch.float64` (or call `.double()`)"

    def leave_Module(self, node: cst.Module) -> None:
        calls = [c for c in self.ctx.indexer.all_calls if c.qualname in _GRADCHECKS]
        if not calls:
            return
        if any(
            c.qualname in ("torch.set_default_dtype", "torch.set_default_tensor_type")
            for c in self.ctx.indexer.all_calls
        ):
            return
        for call in calls:
            if any(argument(call.node, None, kw) is not None for kw in ("eps", "atol", "rtol")):
                continue
            arg = argument(call.node, 1, "inputs")
            if arg is None:
                continue
            elements = self._elements(arg.value, call.scope, call.stmt.index)
            inline = isinstance(arg.value, (cst.Tuple, cst.List)) or len(elements) == 1 and elements[0] is arg.value
            for i, element in enumerate(elements):
                precision, grad = self._judge(element, call.scope, call.stmt.index, 0)
                if precision == _SINGLE_FLAG and grad:
                    name = dotted(element)
                    self.report(
                        element if inline else arg.value,
                        check=call.qualname.rsplit(".", 1)[-1],
                        input=f"`{name}`" if name else f"#{i}",
                    )

    def _elements(self, expr, scope, at):
        if isinstance(expr, (cst.Tuple, cst.List)):
            return [e.value for e in expr.elements if not isinstance(e, cst.StarredElement)]
        if isinstance(expr, cst.Name):
            a = self.ctx.dataflow.reaching(expr.value, scope, at)
            if a is not None and a.kind == "assign" and isinstance(a.value, (cst.Tuple, cst.List)):
                return [e.value for e in a.value.elements if not isinstance(e, cst.StarredElement)]
        return [expr]

    def _judge(self, expr, scope, at, depth):
        """(precision flag or None, requires-grad evidence)."""
        if depth > 8:
            return None, False
        if isinstance(expr, cst.Name):
            owner = scope.lookup_scope(expr.value)
            if owner is not scope:
                return None, False
            defs = [d for d in scope.assignments.get(expr.value, []) if d.kind != "import"]
            if len(defs) != 1 or defs[0].kind != "assign" or defs[0].index >= at:
                return None, False
            precision, grad = self._judge(defs[0].value, scope, defs[0].index, depth + 1)
            return precision, grad or self._grad_set_later(expr.value, scope, at)
        if not isinstance(expr, cst.Call):
            return None, False
        func = expr.func
        q = self.ctx.qualname(func, scope)
        grad_kw = argument(expr, None, "requires_grad")
        grad = grad_kw is not None and isinstance(grad_kw.value, cst.Name) and grad_kw.value.value == "True"
        if q is not None and q.startswith("torch."):
            name = q.rsplit(".", 1)[-1]
            dtype = argument(expr, None, "dtype")
            if dtype is not None:
                return _dtype_flag(self.ctx.code(dtype.value)), grad
            if name in _FLOAT_FACTORIES:
                return _SINGLE_FLAG, grad
            if name == "tensor" and expr.args and _has_float_literal(expr.args[0].value):
                return _SINGLE_FLAG, grad
            if name in _LIKE_FACTORIES and expr.args:
                precision, _ = self._judge(expr.args[0].value, scope, at, depth + 1)
                return precision, grad
            return None, grad
        if isinstance(func, cst.Attribute) and q is None:
            method = func.attr.value
            if method == "double":
                return _DOUBLE_FLAG, self._judge(func.value, scope, at, depth + 1)[1]
            if method in ("float", "half", "bfloat16"):
                return _SINGLE_FLAG, self._judge(func.value, scope, at, depth + 1)[1]
            if method in _KEEP:
                inner_precision, inner_grad = self._judge(func.value, scope, at, depth + 1)
                if method == "requires_grad_":
                    flag = argument(expr, 0, "requires_grad")
                    inner_grad = flag is None or self.ctx.code(flag.value) == "True"
                if method == "detach":
                    inner_grad = False
                if method in ("to", "type") and expr.args:
                    text = " ".join(self.ctx.code(a.value) for a in expr.args)
                    flag = _dtype_flag(text)
                    if flag is not None:
                        return flag, inner_grad
                return inner_precision, inner_grad
        return None, False

    def _grad_set_later(self, name: str, scope, at: int) -> bool:
        """``x.requires_grad = True`` / ``x.requires_grad_()`` between creation and the check."""
        for stmt in scope.statements:
            if stmt.index >= at or not isinstance(stmt.node, cst.SimpleStatementLine):
                continue
            for small in stmt.node.body:
                if isinstance(small, cst.Assign):
                    for t in small.targets:
                        if (isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad"
                                and dotted(t.target.value) == name):
                            return True
                if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                    f = small.value.func
                    if isinstance(f, cst.Attribute) and f.attr.value == "requires_grad_" and dotted(f.value) == name:
                        return True
        return False


def _dtype_flag(text: str) -> str | None:
    if any(d in text for d in _DOUBLE):
        return _DOUBLE_FLAG
    if any(d in text for d in _SINGLE) or text.strip() in ("torch.float",):
        return _SINGLE_FLAG
    return None


def _has_float_literal(node: cst.CSTNode) -> bool:
    if isinstance(node, cst.Float):
        return True
    if isinstance(node, (cst.List, cst.Tuple)):
        return any(_has_float_literal(e.value) for e in node.elements)
    if isinstance(node, cst.UnaryOperation):
        return _has_float_literal(node.expression)
    return False
