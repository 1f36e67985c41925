import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import (
    LOGIT_LAYERS,
    describe_source,
    exp_of_log_softmax,
    is_log_softmax,
    is_softmax,
    loss_calls,
    related_locations,
)
from torch_audit.rule import StaticRule


class NllLossWithoutLogSoftmax(StaticRule):
    """## What it does
    Finds `nn.NLLLoss` or `F.nll_loss` fed a plain softmax, the exponential of a `log_softmax`, or
    the raw output of a `Linear` or convolution layer (logits), instead of log-probabilities: in
    the same function, through variables and `self.` attributes, from a `forward` or an
    `nn.Sequential`, in this file or in other modules of the project (through imports,
    re-exports, helpers and the call sites that pass the model).

    ## Why is this bad?
    `nll_loss` does no normalisation: it only picks `-input[target]`. On probabilities the loss
    is `-p[target]`, which is bounded and has vanishing gradients; on logits it is unbounded
    below, and the model learns to inflate the target score instead of classifying. Neither case
    raises an error.

    ## Known problems
    Third-party models are not followed. A value that comes from `log_softmax`
    (`F.log_softmax`, `.log_softmax()`, `nn.LogSoftmax`) on any path, or from `torch.log` of
    probabilities, is not reported.

    ## References
    - [torch.nn.NLLLoss](https://pytorch.org/docs/stable/generated/torch.nn.NLLLoss.html)
    - [torch.nn.CrossEntropyLoss](https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)
    """

    code = "TA103"
    name = "nll-loss-without-log-softmax"
    severity = Severity.ERROR
    message = "{loss} receives {what} ({where}); it expects log-probabilities"
    fix_title = "Use log_softmax instead of softmax, or pass the logits to cross_entropy instead"

    def leave_Module(self, node: cst.Module) -> None:
        df = self.ctx.dataflow
        for lc in loss_calls(self.ctx, "nll"):
            sources = df.sources(lc.input, lc.call.scope, lc.call.stmt.index)
            if any(is_log_softmax(s) for s in sources):
                continue
            loss = "F.nll_loss" if lc.functional else "NLLLoss"
            for source in sources:
                if is_softmax(source):
                    where = describe_source(self.ctx, source, lc.call.scope, "nn.Softmax")
                    self.report(lc.call.node, loss=loss, what="the output of a softmax", where=where,
                                related=related_locations(source))
                    break
                if exp_of_log_softmax(self.ctx, source) is not None:
                    where = describe_source(self.ctx, source, lc.call.scope, "torch.exp")
                    self.report(lc.call.node, loss=loss, what="probabilities, the exp of a log_softmax", where=where)
                    break
                if source.kind == "module" and source.qualname in LOGIT_LAYERS:
                    layer = "nn." + source.qualname.rsplit(".", 1)[-1]
                    where = describe_source(self.ctx, source, lc.call.scope, layer)
                    self.report(lc.call.node, loss=loss, what=f"raw logits of an {layer}", where=where,
                                related=related_locations(source))
                    break
