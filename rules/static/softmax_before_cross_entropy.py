import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint import fixes
from torch_audit.lint.facts.api import SOFTMAX_FUNCTIONS, is_softmax, loss_calls
from torch_audit.lint.facts.index import argument
from torch_audit.rule import StaticRule


class SoftmaxBeforeCrossEntropy(StaticRule):
    """## What it does
    Finds a softmax whose output reaches `nn.CrossEntropyLoss` or `F.cross_entropy`: in the same
    function, through variables, tuple unpacking and `self.` attributes, from a `forward` that
    returns a softmax, or from an `nn.Sequential` that ends in `nn.Softmax`, across the model/loss
    boundary within one file.

    ## Why is this bad?
    Cross-entropy expects raw logits and applies `log_softmax` itself. Fed probabilities, it
    computes `log_softmax(softmax(x))`: the loss is squashed into a narrow range, gradients
    shrink, and training converges slowly to a worse model, without any error or warning.

    ## Known problems
    Only flows visible in one file are followed. Probabilities computed for metrics or returned
    beside the logits are, correctly, not reported; `log_softmax` into cross-entropy is harmless
    and not reported either (though `nll_loss` is the idiomatic partner of `log_softmax`).

    ## Fix safety
    The fix replaces the softmax call with its input, so that the loss receives the logits. It
    is offered only when the softmax and the loss are in the same function and the softmax
    value is used by nothing but the loss (passed directly, or held in a variable assigned
    once and read once). It is unsafe: the loss value, its gradients and so the trained model
    change (that is the point), and a `dtype=` given to the softmax is dropped with it.

    ## References
    - [torch.nn.CrossEntropyLoss](https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)
    - [PyTorch forums: softmax before CrossEntropyLoss](https://discuss.pytorch.org/t/do-i-need-to-use-softmax-before-nn-crossentropyloss/16739)
    """

    code = "TA101"
    name = "softmax-before-cross-entropy"
    severity = Severity.ERROR
    message = "{loss} receives the output of a softmax ({where}); cross-entropy applies log_softmax itself"
    fix_title = "Pass the logits (the input of the softmax) to the loss"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for lc in loss_calls(self.ctx, "cross_entropy"):
            for source in df.sources(lc.input, lc.call.scope, lc.call.stmt.index):
                if is_softmax(source):
                    self.report(
                        lc.call.node,
                        loss="F.cross_entropy" if lc.functional else "CrossEntropyLoss",
                        where=_describe(self.ctx, source, lc.call.scope),
                        fix=_fix(self.ctx, lc, source),
                    )
                    break


def _describe(ctx, source, loss_scope) -> str:
    line = ctx.position(source.node).start.line
    if source.kind == "module":
        return f"the nn.Softmax layer built at line {line}"
    if source.scope is not None and source.scope is not loss_scope and source.scope.kind == "function":
        owner = source.scope.parent
        prefix = f"{owner.name}." if owner is not None and owner.kind == "class" else ""
        return f"returned by {prefix}{source.scope.name}() at line {line}"
    return f"line {line}"


def _fix(ctx, lc, source) -> Fix | None:
    """Drop the softmax when it and the loss share a function and only the loss uses it."""
    scope = lc.call.scope
    softmax = source.node
    if source.kind != "call" or source.scope is not scope or not isinstance(softmax, cst.Call):
        return None
    if source.qualname in SOFTMAX_FUNCTIONS and source.qualname != "torch.Tensor.softmax":
        arg = argument(softmax, 0, "input")
        if arg is None or arg.star:
            return None
        logits = arg.value
    elif source.qualname is None and isinstance(softmax.func, cst.Attribute):
        logits = softmax.func.value  # logits.softmax(dim=1)
    else:
        return None
    used = lc.input
    if used is not softmax:
        if not (isinstance(used, cst.Name) and fixes.only_value_of_single_assignment(ctx, scope, softmax, used.value)):
            return None
    edit = fixes.replace_keeping(ctx, softmax, logits)
    if edit is None:
        return None
    return Fix("Remove the softmax; pass the logits to the loss", Applicability.UNSAFE, (edit,))
