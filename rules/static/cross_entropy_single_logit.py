import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import LOGIT_LAYERS, loss_calls, output_width, shape_preserving_dataflow
from torch_audit.rule import StaticRule


class CrossEntropySingleLogit(StaticRule):
    """## What it does
    Finds `nn.CrossEntropyLoss` or `F.cross_entropy` fed the output of a `Linear` (or
    convolution) layer with exactly one output feature (channel), unchanged in shape: directly, or
    through variables, a `forward` or an `nn.Sequential` of the same file.

    ## Why is this bad?
    Cross-entropy normalises over the class dimension. With one class, `log_softmax` of a single
    logit is always 0, so the loss is constantly zero and nothing is learned, without any error
    (with probabilities as targets it is zero too). A binary classifier with
    one output needs `BCEWithLogitsLoss`; a multi-class one needs one output per class.

    ## Known problems
    Only flows that keep the tensor's shape are followed: `view`, `reshape`, `squeeze`,
    indexing or concatenation may legitimately turn one score per item into a row of logits
    (multiple choice, span selection, ranking), so they end the search.

    ## References
    - [torch.nn.CrossEntropyLoss](https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html)
    - [torch.nn.BCEWithLogitsLoss](https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html)
    """

    code = "TA107"
    name = "cross-entropy-single-logit"
    severity = Severity.ERROR
    message = "{loss} receives the output of the single-output {layer} built at line {line}; the loss is always zero"
    fix_title = "Use BCEWithLogitsLoss for a binary target, or give the layer one output per class"

    def leave_Module(self, node: cst.Module) -> None:
        df = shape_preserving_dataflow(self.ctx)
        for lc in loss_calls(self.ctx, "cross_entropy"):
            for source in df.sources(lc.input, lc.call.scope, lc.call.stmt.index):
                if source.kind != "module" or source.qualname not in LOGIT_LAYERS:
                    continue
                if not isinstance(source.node, cst.Call) or output_width(source.node, source.qualname) != 1:
                    continue
                layer = "nn." + source.qualname.rsplit(".", 1)[-1]
                self.report(
                    lc.call.node,
                    loss="F.cross_entropy" if lc.functional else "CrossEntropyLoss",
                    layer=layer,
                    line=self.ctx.position(source.node).start.line,
                )
                break
