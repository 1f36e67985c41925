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


class SigmoidWithBceLoss(StaticRule):
    """## What it does
    Finds `nn.BCELoss` or `F.binary_cross_entropy` computed on the output of a sigmoid
    (`torch.sigmoid`, `.sigmoid()`, `nn.Sigmoid`, a `forward` or an `nn.Sequential` that ends in
    one), also when the model is defined in another module of the project or reaches the loss as
    a parameter or a `self.` attribute set from a constructor argument (a GAN trainer given its
    discriminator).

    ## Why is this bad?
    A sigmoid followed by `log` loses precision: for large logits the sigmoid rounds to exactly
    0 or 1, `BCELoss` clamps the log to -100, and the gradient vanishes or saturates.
    `BCEWithLogitsLoss` fuses the two with the log-sum-exp trick, and is also the only one of the
    two that is allowed under `torch.autocast`.

    ## Known problems
    The model may return probabilities on purpose (for inference); the fix then moves the
    sigmoid out of the model into the inference code. Probabilities that come from a softmax or
    from elsewhere are not reported.

    ## Fix safety
    The fix drops the sigmoid and switches the loss to its logits variant:
    `F.binary_cross_entropy` becomes `F.binary_cross_entropy_with_logits`, and `nn.BCELoss(...)`
    becomes `nn.BCEWithLogitsLoss(...)` (both take the same leading arguments). It is offered
    only when the sigmoid, the loss and (for the module form) the loss's constructor are in the
    same function, and the sigmoid's value and the loss object are used by nothing else. It is
    unsafe: the loss is now computed stably, so its values differ where the old one saturated,
    and anything else that expected probabilities from this code path is not checked.

    ## References
    - [torch.nn.BCEWithLogitsLoss](https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html)
    - [Automatic mixed precision: prefer binary_cross_entropy_with_logits](https://pytorch.org/docs/stable/amp.html#prefer-binary-cross-entropy-with-logits-over-binary-cross-entropy)
    """

    code = "TA104"
    name = "sigmoid-with-bce-loss"
    severity = Severity.WARNING
    message = "{loss} is computed on the output of a sigmoid ({where}); this is numerically unstable"
    fix_title = "Drop the sigmoid and use BCEWithLogitsLoss (F.binary_cross_entropy_with_logits) on the logits"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for lc in loss_calls(self.ctx, "bce"):
            for source in df.sources(lc.input, lc.call.scope, lc.call.stmt.index):
                if is_sigmoid(source):
                    self.report(
                        lc.call.node,
                        loss="F.binary_cross_entropy" if lc.functional else "BCELoss",
                        where=describe_source(self.ctx, source, lc.call.scope, "nn.Sigmoid"),
                        related=related_locations(source),
                        fix=_fix(self.ctx, lc, source),
                    )
                    break


def _fix(ctx, lc, source) -> Fix | None:
    """Drop the sigmoid and rename the loss to its logits variant."""
    scope = lc.call.scope
    drop = fixes.drop_activation(ctx, lc.input, source, scope, SIGMOID_FUNCTIONS, "sigmoid")
    if drop is None:
        return None
    node = lc.call.node
    if lc.functional:
        renamed = _rename(ctx, node.func, "binary_cross_entropy", "binary_cross_entropy_with_logits")
    else:
        ctor = lc.ctor
        if ctor is None:
            return None
        if node.func is ctor:
            pass  # nn.BCELoss()(probs, y)
        elif isinstance(node.func, cst.Name):
            # criterion = nn.BCELoss() in the same function, used for this call only
            if not fixes.only_value_of_single_assignment(ctx, scope, ctor, node.func.value):
                return None
        else:
            return None  # self.criterion: may be used elsewhere on probabilities
        renamed = _rename(ctx, ctor.func, "BCELoss", "BCEWithLogitsLoss")
    if renamed is None:
        return None
    return Fix(
        "Drop the sigmoid and use the logits variant of the loss",
        Applicability.UNSAFE,
        (renamed, drop),
    )


def _rename(ctx, func: cst.BaseExpression, old: str, new: str):
    if isinstance(func, cst.Attribute) and func.attr.value == old:
        return fixes.replace(ctx, func.attr, new)
    return None  # a bare imported name would need a new import
