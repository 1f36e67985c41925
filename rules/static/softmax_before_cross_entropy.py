import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import (
    SOFTMAX_FUNCTIONS,
    describe_source,
    fixes,
    is_probabilities,
    loss_calls,
    related_locations,
)
from torch_audit.rule import StaticRule


class SoftmaxBeforeCrossEntropy(StaticRule):
    """## What it does
    Finds a softmax whose output reaches `nn.CrossEntropyLoss` or `F.cross_entropy`: in the same
    function, through variables, tuple unpacking and `self.` attributes, from a `forward` that
    returns a softmax, or from an `nn.Sequential` that ends in `nn.Softmax`; also the exponential of
    a `log_softmax` (probabilities made by hand). The model may live in another module of the
    project (imported, re-exported by a package's `__init__.py`), be built by a helper, or reach
    the loss as a function parameter or a `self.` attribute set from a constructor argument: the
    message then names the file and the call site the finding rests on.

    ## Why is this bad?
    Cross-entropy expects raw logits and applies `log_softmax` itself. Fed probabilities, it
    computes `log_softmax(softmax(x))`: the loss is squashed into a narrow range, gradients
    shrink, and training converges slowly to a worse model, without any error or warning.

    ## Known problems
    Objects from third-party code, and parameters no call site of the linted project passes, are
    not followed (`torch-audit lint` on one file still reads the local modules it imports, but not
    its callers). Probabilities computed for metrics or returned
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
                if is_probabilities(self.ctx, source):
                    self.report(
                        lc.call.node,
                        loss="F.cross_entropy" if lc.functional else "CrossEntropyLoss",
                        where=describe_source(self.ctx, source, lc.call.scope, "nn.Softmax"),
                        related=related_locations(source),
                        fix=_fix(self.ctx, lc, source),
                    )
                    break


def _fix(ctx, lc, source) -> Fix | None:
    """Drop the softmax when it and the loss share a function and only the loss uses it."""
    edit = fixes.drop_activation(ctx, lc.input, source, lc.call.scope, SOFTMAX_FUNCTIONS, "softmax")
    if edit is None:
        return None
    return Fix("Remove the softmax; pass the logits to the loss", Applicability.UNSAFE, (edit,))
