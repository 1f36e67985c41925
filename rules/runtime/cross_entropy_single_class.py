from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class CrossEntropySingleClass(RuntimeCheck):
    """## What it does
    Checks that the class dimension of the input of `F.cross_entropy` / `nn.CrossEntropyLoss`
    has more than one entry.

    ## Why is this bad?
    Softmax over a single class is always 1, so the loss is exactly zero and no gradient flows:
    the model never learns. This is what happens when a binary classifier with one output unit
    is trained with `CrossEntropyLoss` instead of `BCEWithLogitsLoss`.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html
    - https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
    """

    code = "TA708"
    name = "cross-entropy-single-class"
    severity = Severity.ERROR
    message = "cross-entropy at {site} over a class dimension of size 1 (input shape {shape}): the loss is always 0"
    fix_title = "Use BCEWithLogitsLoss for one output unit, or output one logit per class"
    events = frozenset({"cross_entropy"})

    def on_cross_entropy(self, event) -> None:
        x = event.input
        if x.dim() < 2 or x.shape[1] != 1:
            return
        from torch_audit.runtime.check_helpers import site_str

        site = event.site
        path, line = site if site else (None, None)
        self.report(site_str(site), path=path, line=line, module=event.module,
                    site=site_str(site), shape=tuple(x.shape))
