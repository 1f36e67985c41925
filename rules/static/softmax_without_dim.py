import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import argument
from torch_audit.rule import StaticRule

#: functions whose ``dim`` is optional (and then guessed), with the position of ``dim``
FUNCTIONS = {
    "torch.nn.functional.softmax": 1,
    "torch.nn.functional.log_softmax": 1,
    "torch.nn.functional.softmin": 1,
}
#: layers whose ``dim`` is optional, with the position of ``dim``
LAYERS = {
    "torch.nn.Softmax": 0,
    "torch.nn.LogSoftmax": 0,
    "torch.nn.Softmin": 0,
}


class SoftmaxWithoutDim(StaticRule):
    """## What it does
    Finds `F.softmax`, `F.log_softmax`, `F.softmin`, `nn.Softmax()`, `nn.LogSoftmax()` and
    `nn.Softmin()` called without a `dim` (or with `dim=None`).

    ## Why is this bad?
    Without `dim`, PyTorch guesses the axis from the number of dimensions of the input: dim 0
    for 0-, 1- and 3-dimensional input, dim 1 otherwise (with a deprecation warning). For a
    batch of sequences `(N, T, C)` that normalises over the *batch*, mixing samples; the same
    code silently changes meaning when a batch dimension is added or removed.

    ## References
    - [torch.nn.functional.softmax](https://pytorch.org/docs/stable/generated/torch.nn.functional.softmax.html)
    - [torch.nn.Softmax](https://pytorch.org/docs/stable/generated/torch.nn.Softmax.html)
    """

    code = "TA106"
    name = "softmax-without-dim"
    severity = Severity.WARNING
    message = "{func} without dim: PyTorch guesses the axis from the input's number of dimensions"
    fix_title = "Pass dim explicitly (dim=-1 for the last axis)"

    def visit_Call(self, node: cst.Call) -> None:
        call = self.ctx.call(node)
        q = call.qualname if call is not None else self.ctx.qualname(node.func)
        if q in FUNCTIONS:
            position = FUNCTIONS[q]
        elif q in LAYERS:
            position = LAYERS[q]
        else:
            return
        if any(a.star for a in node.args):
            return  # *args / **kwargs may carry dim
        dim = argument(node, position, "dim")
        if dim is not None and not (isinstance(dim.value, cst.Name) and dim.value.value == "None"):
            return
        if q in FUNCTIONS and argument(node, 0, "input") is None:
            return  # not a call we understand
        prefix = "F." if q in FUNCTIONS else "nn."
        self.report(node, func=f"{prefix}{q.rsplit('.', 1)[-1]}()")
