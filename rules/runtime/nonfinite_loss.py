from __future__ import annotations

import math

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class NonFiniteLoss(RuntimeCheck):
    """## What it does
    Checks that the tensor `backward()` is called on (the loss) is finite, at the line that
    calls `backward()`.

    ## Why is this bad?
    A NaN or infinite loss means the step learns nothing useful; its gradients are usually NaN as
    well and poison the weights at `optimizer.step()`. Even when the gradients stay finite (a
    `nan_to_num`, a masked term, a loss that is only logged), the number that training optimises
    is meaningless. `torch.autograd.detect_anomaly` does not look at the loss at all.

    ## Known problems
    A non-scalar root (`out.backward(grad)`) is checked through its sum, which can overflow for
    huge finite values.

    ## References
    - https://pytorch.org/docs/stable/notes/faq.html
    - https://pytorch.org/docs/stable/amp.html#gradient-scaling
    """

    code = "TA701"
    name = "nonfinite-loss"
    severity = Severity.ERROR
    message = "backward() was called on a non-finite loss ({value})"
    fix_title = "Look for log(0), division by zero, overflow in fp16, or a bad batch"
    events = frozenset({"backward"})

    def on_backward(self, event) -> None:
        value = event.value
        if value is None:
            return
        site = event.site
        step = self.session.step

        def check(values: list[float]) -> None:
            x = values[0]
            if not math.isfinite(x):
                path, line = site if site else (None, None)
                subject = f"{path}:{line}"
                self.report(subject, step=step, value=x, path=path, line=line,
                            message=self.message.format(value=x))

        self.defer(value, check)
