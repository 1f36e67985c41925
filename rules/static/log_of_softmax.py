import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import describe_source, fixes, is_softmax
from torch_audit.rule import StaticRule

LOG_FUNCTIONS = frozenset({"torch.log", "torch.Tensor.log"})


class LogOfSoftmax(StaticRule):
    """## What it does
    Finds `torch.log(...)` or `.log()` applied to the output of a softmax (`F.softmax`,
    `torch.softmax`, `.softmax()`, `nn.Softmax`), directly or through variables.

    ## Why is this bad?
    A probability that underflows to 0 gives `log(0) = -inf`, and `p * log(p)` then gives NaN;
    the gradient of `log(softmax(x))` is also less accurate. `log_softmax` computes the same
    value with the log-sum-exp trick and never underflows.

    ## Known problems
    `torch.log(p + eps)` or `torch.log(p.clamp(min=eps))` are not reported: the epsilon shows
    that the underflow was considered (though `log_softmax` is still more accurate).

    ## Fix safety
    When the softmax call is written directly inside the log (`torch.log(F.softmax(x, dim=1))`,
    `x.softmax(1).log()`), the fix turns it into the same call of `log_softmax`
    (`F.log_softmax(x, dim=1)`). It is safe: the value is the same where the original was
    finite, and `-inf`/NaN from underflow disappear. Softmax values held in a variable (often
    also used elsewhere) and `nn.Softmax` layers are not fixed.

    ## References
    - [torch.nn.functional.log_softmax](https://pytorch.org/docs/stable/generated/torch.nn.functional.log_softmax.html)
    - [torch.nn.functional.softmax (see the note on log_softmax)](https://pytorch.org/docs/stable/generated/torch.nn.functional.softmax.html)
    """

    code = "TA105"
    name = "log-of-softmax"
    severity = Severity.WARNING
    message = "{log} of a softmax ({where}) underflows to -inf for small probabilities"
    fix_title = "Use log_softmax(x, dim) instead of log(softmax(x, dim))"
    fixable = "sometimes"

    def _fix(self, call, value: cst.BaseExpression, source) -> Fix | None:
        """`torch.log(F.softmax(x, 1))` / `F.softmax(x, 1).log()` → `F.log_softmax(x, 1)`."""
        softmax = source.node
        if source.kind != "call" or softmax is not value or not isinstance(softmax, cst.Call):
            return None
        if not (isinstance(softmax.func, cst.Attribute) and softmax.func.attr.value == "softmax"):
            return None  # a bare `softmax(...)` would need an import of log_softmax
        if len(call.node.args) != (0 if call.receiver is value else 1):
            return None  # torch.log(p, out=...)
        edits = fixes.unwrap(self.ctx, call.node, softmax)
        if edits is None:
            return None
        edits.append(fixes.replace(self.ctx, softmax.func.attr, "log_softmax"))
        return Fix("Use log_softmax", Applicability.SAFE, tuple(edits))

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for call in self.ctx.indexer.all_calls:
            q = call.qualname
            if q in LOG_FUNCTIONS:
                arg = call.arg(0, "input")
                label = self.ctx.code(call.node.func)
            elif q is None and call.method == "log" and call.receiver is not None and not call.node.args:
                arg = cst.Arg(call.receiver)
                label = ".log()"
            else:
                continue
            if arg is None:
                continue
            for source in df.sources(arg.value, call.scope, call.stmt.index):
                if is_softmax(source):
                    self.report(
                        call.node,
                        fix=self._fix(call, arg.value, source),
                        log=label,
                        where=describe_source(self.ctx, source, call.scope, "nn.Softmax"),
                    )
                    break
