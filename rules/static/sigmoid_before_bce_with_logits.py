import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import (
    SIGMOID_FUNCTIONS,
    describe_source,
    fixes,
    is_sigmoid,
    loss_calls,
    related_locations,
)
from torch_audit.rule import StaticRule


class SigmoidBeforeBceWithLogits(StaticRule):
    """## What it does
    Finds a sigmoid whose output reaches `nn.BCEWithLogitsLoss` or
    `F.binary_cross_entropy_with_logits`: in the same function, through variables and `self.`
    attributes, from a `forward` that returns a sigmoid, or from an `nn.Sequential` that ends in
    `nn.Sigmoid`, in this file or in other modules of the project (imports, helpers, and the
    call sites that pass the model).

    ## Why is this bad?
    `BCEWithLogitsLoss` applies the sigmoid itself. Fed probabilities, it computes
    `sigmoid(sigmoid(x))`, which lies in (0.5, 0.73): the loss can never reach its minimum,
    gradients are small, and the model trains badly without any error or warning.

    ## Known problems
    Third-party models are not followed. A sigmoid applied to the *target* or computed
    for metrics beside the logits is, correctly, not reported.

    ## Fix safety
    The fix replaces the sigmoid call with its input, so that the loss receives the logits. It
    is offered only when the sigmoid and the loss are in the same function and the sigmoid's
    value is used by nothing but the loss. It is unsafe: the loss value, its gradients and so
    the trained model change (that is the point).

    ## References
    - [torch.nn.BCEWithLogitsLoss](https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html)
    - [PyTorch forums: sigmoid before BCEWithLogitsLoss](https://discuss.pytorch.org/t/bceloss-vs-bcewithlogitsloss/33586)
    """

    code = "TA102"
    name = "sigmoid-before-bce-with-logits"
    severity = Severity.ERROR
    message = "{loss} receives the output of a sigmoid ({where}); the loss applies the sigmoid itself"
    fix_title = "Pass the logits (the input of the sigmoid) to the loss"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for lc in loss_calls(self.ctx, "bce_with_logits"):
            for source in df.sources(lc.input, lc.call.scope, lc.call.stmt.index):
                if is_sigmoid(source):
                    self.report(
                        lc.call.node,
                        loss="F.binary_cross_entropy_with_logits" if lc.functional else "BCEWithLogitsLoss",
                        where=describe_source(self.ctx, source, lc.call.scope, "nn.Sigmoid"),
                        related=related_locations(source),
                        fix=_fix(self.ctx, lc, source),
                    )
                    break


def _fix(ctx, lc, source) -> Fix | None:
    edit = fixes.drop_activation(ctx, lc.input, source, lc.call.scope, SIGMOID_FUNCTIONS, "sigmoid")
    if edit is None:
        return None
    return Fix("Remove the sigmoid; pass the logits to the loss", Applicability.UNSAFE, (edit,))
