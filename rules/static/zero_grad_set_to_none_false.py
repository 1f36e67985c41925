import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import bool_argument
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
    `None`) needs `set_to_none=False`. A file that adds into gradients itself (`p.grad += g`,
    `p.grad.add_(g)`, `p.grad.copy_(g)`) is not reported: those lines fail on `None`.

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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._found: list[cst.Call] = []
        self._accumulates = False

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute):
            return
        if func.attr.value in _IN_PLACE and _is_grad(func.value):
            self._accumulates = True  # p.grad.add_(g)
        if func.attr.value != "zero_grad":
            return
        if bool_argument(node, 0, "set_to_none") is False:
            self._found.append(node)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if _is_grad(node.target):
            self._accumulates = True  # p.grad += g

    def leave_Module(self, original_node: cst.Module) -> None:
        if self._accumulates:
            return  # the code adds into .grad itself: it needs the zeros, not None
        for node in self._found:
            self.report(node)


_IN_PLACE = frozenset({"add_", "sub_", "mul_", "div_", "copy_", "addcmul_", "addcdiv_", "lerp_"})


def _is_grad(expr: cst.BaseExpression) -> bool:
    """``x.grad`` (also ``x.grad.data``, ``x.grad[i]``)."""
    while isinstance(expr, (cst.Attribute, cst.Subscript)):
        if isinstance(expr, cst.Attribute) and expr.attr.value == "grad":
            return True
        if isinstance(expr, cst.Attribute) and expr.attr.value != "data":
            return False
        expr = expr.value
    return False
