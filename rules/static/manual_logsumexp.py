import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import EXP, LOG, SUM, argument, torch_call
from torch_audit.rule import StaticRule


class ManualLogsumexp(StaticRule):
    """## What it does
    Finds `torch.log(torch.sum(torch.exp(x), dim))` and its method spellings
    (`x.exp().sum(dim).log()`) when a `dim` is given, which `torch.logsumexp(x, dim)` computes
    stably.

    ## Why is this bad?
    `exp(x)` overflows to `inf` for `x` above about 88 in float32 (11 in float16), and underflows
    to 0 for very negative `x`, giving `log(0) = -inf`. `torch.logsumexp` subtracts the maximum
    first and never overflows; its gradient is the softmax, computed stably too.

    ## Known problems
    A sum without `dim` (or `dim=None`) is not reported: `torch.logsumexp` requires a `dim`, so
    the replacement is not one call (see pytorch/pytorch#144339).

    ## References
    - [torch.logsumexp](https://pytorch.org/docs/stable/generated/torch.logsumexp.html)
    - [The log-sum-exp trick](https://en.wikipedia.org/wiki/LogSumExp)
    """

    code = "TA622"
    name = "manual-logsumexp"
    severity = Severity.WARNING
    message = "log(sum(exp(x), dim={dim})) overflows for large values; use torch.logsumexp({x}, dim={dim})"
    fix_title = "Use torch.logsumexp"

    def visit_Call(self, node: cst.Call) -> None:
        summed = torch_call(self.ctx, node, LOG, "log")
        if not isinstance(summed, cst.Call):
            return
        q = self.ctx.qualname(summed.func)
        if q in SUM:
            inner = argument(summed, 0, "input")
            dim = argument(summed, 1, "dim")
            inner_expr = inner.value if inner is not None else None
        elif q is None and isinstance(summed.func, cst.Attribute) and summed.func.attr.value == "sum":
            inner_expr = summed.func.value
            dim = argument(summed, 0, "dim")
        else:
            return
        if dim is None or (isinstance(dim.value, cst.Name) and dim.value.value == "None"):
            return
        x = torch_call(self.ctx, inner_expr, EXP, "exp") if inner_expr is not None else None
        if x is None:
            return
        self.report(node, x=self.ctx.code(x), dim=self.ctx.code(dim.value))
