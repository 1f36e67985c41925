import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import EXP, LOG, cannot_be_small, fixes, is_one, torch_call
from torch_audit.rule import StaticRule


class ManualLog1p(StaticRule):
    """## What it does
    Finds `torch.log(1 + x)`, `torch.log(x + 1)`, `torch.log(1 - x)` and the method forms
    (`(1 + x).log()`), which `torch.log1p` computes accurately; `torch.log(1 + torch.exp(x))` is
    reported as the softplus it is.

    ## Why is this bad?
    For small `x`, `1 + x` rounds away most of `x`'s digits before the logarithm sees it: in
    float32, `torch.log(1 + 1e-8)` is exactly 0 while `torch.log1p(1e-8)` is 1e-8. Losses and
    log-likelihoods built this way lose precision or gradients exactly where they matter.
    `log(1 + exp(x))` also overflows to `inf` for `x` above about 88 in float32; `F.softplus`
    does not.

    ## Known problems
    `torch.log` only accepts tensors, so `x` is a tensor; NumPy and `math` calls are not
    reported, nor is `1 + x` where `x` visibly cannot be small: integer-valued
    (`torch.floor(...)`, `.round()`, `.long()`, `len(...)`, a cast of these), which is exact; a
    literal; clamped to at least 0.1 (`x.clamp(min=1)`); or a constant of at least 0.1 plus
    something non-negative (`2 + x.abs()`). Other arguments that are never small in practice
    are reported: `log1p` costs the same.

    ## Fix safety
    `torch.log(1 + x)` becomes `torch.log1p(x)`, `torch.log(1 - x)` becomes `torch.log1p(-x)`,
    and `(1 + x).log()` becomes `x.log1p()`, keeping the spelling of `torch`. The fix is safe:
    the value is the same, computed more accurately. Not fixed: `log(1 + exp(x))` (its
    replacement `F.softplus` may need an import), a bare `log` imported from torch, and
    expressions with a comment inside.

    ## References
    - [torch.log1p](https://pytorch.org/docs/stable/generated/torch.log1p.html)
    - [torch.nn.functional.softplus](https://pytorch.org/docs/stable/generated/torch.nn.functional.softplus.html)
    """

    code = "TA620"
    name = "manual-log1p"
    severity = Severity.WARNING
    message = "{expr} loses precision for small values; use {replacement}"
    fix_title = "Use torch.log1p (or F.softplus for log(1 + exp(x)))"
    fixable = "sometimes"

    def visit_Call(self, node: cst.Call) -> None:
        operand = torch_call(self.ctx, node, LOG, "log")
        if operand is None:
            return
        if not isinstance(operand, cst.BinaryOperation):
            return
        op = operand.operator
        if isinstance(op, cst.Add) and (is_one(operand.left) or is_one(operand.right)):
            other = operand.right if is_one(operand.left) else operand.left
            if cannot_be_small(self.ctx, other):
                return  # 1 + an integer is exact, 1 + a value that is never small loses nothing
            inner = torch_call(self.ctx, other, EXP, "exp")
            fix = None
            if inner is not None:
                replacement = f"F.softplus({self.ctx.code(inner)})"
            else:
                replacement = f"torch.log1p({self.ctx.code(other)})"
                fix = self._fix(node, operand, other, negate=False)
        elif isinstance(op, cst.Subtract) and is_one(operand.left):
            if cannot_be_small(self.ctx, operand.right):
                return
            replacement = f"torch.log1p(-{_paren(self.ctx.code(operand.right), operand.right)})"
            fix = self._fix(node, operand, operand.right, negate=True)
        else:
            return
        self.report(node, expr=_short(self.ctx.code(node)), replacement=replacement, fix=fix)

    def _fix(self, node: cst.Call, operand: cst.BinaryOperation, kept: cst.BaseExpression, negate: bool) -> Fix | None:
        """`torch.log(1 + x)` → `torch.log1p(x)`; `(1 + x).log()` → `x.log1p()`."""
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value != "log":
            return None
        if fixes.comments_in(operand, keep=[kept]):
            return None
        method = func.value is operand
        if not method and (len(node.args) != 1 or node.args[0].value is not operand):
            return None
        text = fixes.source_of(self.ctx, kept)
        atomic = isinstance(kept, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or bool(kept.lpar)
        if "\n" in text and not kept.lpar:
            atomic = False
        if negate:
            text = "-" + (text if atomic else f"({text})")
            atomic = False
        if method and not atomic:
            text = f"({text})"
        return Fix(
            "Use log1p",
            Applicability.SAFE,
            (fixes.replace(self.ctx, operand, text, parens=True), fixes.replace(self.ctx, func.attr, "log1p")),
        )


def _paren(text: str, expr: cst.BaseExpression) -> str:
    return text if isinstance(expr, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) else f"({text})"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
