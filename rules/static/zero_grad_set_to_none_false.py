import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.api import bool_argument
from torch_audit.rule import StaticRule


class ZeroGradSetToNoneFalse(StaticRule):
    """## What it does
    Finds `zero_grad(set_to_none=False)` (or `zero_grad(False)`) on an optimizer or a module.

    ## Why is this bad?
    Filling every gradient with zeros costs a memset per parameter and keeps the gradient memory
    allocated between steps; `set_to_none=True` (the default since torch 2.0) frees it and lets
    the next backward write the gradients directly.

    ## Known problems
    Opt-in: code that reads `.grad` of parameters that got no gradient (and expects zeros, not
    `None`) needs `set_to_none=False`.

    ## References
    - [torch.optim.Optimizer.zero_grad](https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.zero_grad.html)
    - [Performance tuning guide](https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#use-parameter-grad-none-instead-of-model-zero-grad-or-optimizer-zero-grad)
    """

    code = "TA631"
    name = "zero-grad-set-to-none-false"
    severity = Severity.INFO
    message = "zero_grad(set_to_none=False) writes zeros into every gradient instead of freeing it"
    fix_title = "Call zero_grad() (set_to_none=True is the default)"
    opt_in = True

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value != "zero_grad":
            return
        if bool_argument(node, 0, "set_to_none") is False:
            self.report(node)
