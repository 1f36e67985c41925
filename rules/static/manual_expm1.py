import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import EXP, cannot_be_small, fixes, is_one, torch_call
from torch_audit.rule import StaticRule


class ManualExpm1(StaticRule):
    """## What it does
    Finds `torch.exp(x) - 1` and `x.exp() - 1`, which `torch.expm1(x)` computes accurately.

    ## Why is this bad?
    For small `x`, `exp(x)` is close to 1 and the subtraction cancels most significant digits:
    in float32, `torch.exp(1e-8) - 1` is exactly 0 while `torch.expm1(1e-8)` is 1e-8.

    ## Known problems
    `math.exp` and `np.exp` are not reported (their arguments are not tensors), nor is
    `torch.exp(x) - 1` where `x` visibly cannot be small: integer-valued (`torch.round(...)`,
    `.long()`, a cast of these), a literal, clamped to at least 0.1, or a constant of at least
    0.1 plus something non-negative.

    ## Fix safety
    `torch.exp(x) - 1` becomes `torch.expm1(x)` and `x.exp() - 1` becomes `x.expm1()` (the same
    spelling, renamed). The fix is safe: the value is the same, computed more accurately.
    Not fixed: a bare `exp(x)` imported from torch (it would need a new import), calls with
    more arguments than the input, and expressions with a comment inside.

    ## References
    - [torch.expm1](https://pytorch.org/docs/stable/generated/torch.expm1.html)
    """

    code = "TA621"
    name = "manual-expm1"
    severity = Severity.WARNING
    message = "{expr} loses precision for small values; use torch.expm1({operand})"
    fix_title = "Use torch.expm1"
    fixable = "sometimes"

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Subtract) or not is_one(node.right):
            return
        operand = torch_call(self.ctx, node.left, EXP, "exp")
        if operand is None or cannot_be_small(self.ctx, operand):
            return
        text = " ".join(self.ctx.code(node).split())
        self.report(
            node,
            expr=text if len(text) <= 60 else text[:57] + "...",
            operand=self.ctx.code(operand),
            fix=self._fix(node),
        )

    def _fix(self, node: cst.BinaryOperation) -> Fix | None:
        """`torch.exp(x) - 1` → `torch.expm1(x)`; `x.exp() - 1` → `x.expm1()`."""
        call = node.left
        if not isinstance(call, cst.Call) or not isinstance(call.func, cst.Attribute):
            return None
        if call.func.attr.value != "exp" or len(call.args) > 1 or any(a.star for a in call.args):
            return None
        edits = fixes.unwrap(self.ctx, node, call)
        if edits is None:
            return None
        edits.append(fixes.replace(self.ctx, call.func.attr, "expm1"))
        return Fix("Use expm1", Applicability.SAFE, tuple(edits))
