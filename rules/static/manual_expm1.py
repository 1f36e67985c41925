import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.numerics import EXP, is_one, torch_call
from torch_audit.rule import StaticRule


class ManualExpm1(StaticRule):
    """## What it does
    Finds `torch.exp(x) - 1` and `x.exp() - 1`, which `torch.expm1(x)` computes accurately.

    ## Why is this bad?
    For small `x`, `exp(x)` is close to 1 and the subtraction cancels most significant digits:
    in float32, `torch.exp(1e-8) - 1` is exactly 0 while `torch.expm1(1e-8)` is 1e-8.

    ## Known problems
    `math.exp` and `np.exp` are not reported (their arguments are not tensors).

    ## References
    - [torch.expm1](https://pytorch.org/docs/stable/generated/torch.expm1.html)
    """

    code = "TA621"
    name = "manual-expm1"
    severity = Severity.WARNING
    message = "{expr} loses precision for small values; use torch.expm1({operand})"
    fix_title = "Use torch.expm1"

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if not isinstance(node.operator, cst.Subtract) or not is_one(node.right):
            return
        operand = torch_call(self.ctx, node.left, EXP, "exp")
        if operand is None:
            return
        text = " ".join(self.ctx.code(node).split())
        self.report(node, expr=text if len(text) <= 60 else text[:57] + "...", operand=self.ctx.code(operand))
