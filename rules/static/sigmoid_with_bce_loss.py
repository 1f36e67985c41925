import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.api import is_sigmoid, loss_calls
from torch_audit.lint.facts.layers import describe_source
from torch_audit.rule import StaticRule


class SigmoidWithBceLoss(StaticRule):
    """## What it does
    Finds `nn.BCELoss` or `F.binary_cross_entropy` computed on the output of a sigmoid
    (`torch.sigmoid`, `.sigmoid()`, `nn.Sigmoid`, a `forward` or an `nn.Sequential` of the same
    file that ends in one).

    ## Why is this bad?
    A sigmoid followed by `log` loses precision: for large logits the sigmoid rounds to exactly
    0 or 1, `BCELoss` clamps the log to -100, and the gradient vanishes or saturates.
    `BCEWithLogitsLoss` fuses the two with the log-sum-exp trick, and is also the only one of the
    two that is allowed under `torch.autocast`.

    ## Known problems
    The model may return probabilities on purpose (for inference); the fix then moves the
    sigmoid out of the model into the inference code. Probabilities that come from a softmax or
    from elsewhere are not reported.

    ## References
    - [torch.nn.BCEWithLogitsLoss](https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html)
    - [Automatic mixed precision: prefer binary_cross_entropy_with_logits](https://pytorch.org/docs/stable/amp.html#prefer-binary-cross-entropy-with-logits-over-binary-cross-entropy)
    """

    code = "TA104"
    name = "sigmoid-with-bce-loss"
    severity = Severity.WARNING
    message = "{loss} is computed on the output of a sigmoid ({where}); this is numerically unstable"
    fix_title = "Drop the sigmoid and use BCEWithLogitsLoss (F.binary_cross_entropy_with_logits) on the logits"

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for lc in loss_calls(self.ctx, "bce"):
            for source in df.sources(lc.input, lc.call.scope, lc.call.stmt.index):
                if is_sigmoid(source):
                    self.report(
                        lc.call.node,
                        loss="F.binary_cross_entropy" if lc.functional else "BCELoss",
                        where=describe_source(self.ctx, source, lc.call.scope, "nn.Sigmoid"),
                    )
                    break
