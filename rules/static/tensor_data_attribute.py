import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule

#: methods that show the receiver of `.data` is a tensor
TENSOR_METHODS = frozenset(
    {
        "copy_", "fill_", "zero_", "normal_", "uniform_", "mul_", "add_", "sub_", "div_", "clamp_",
        "clamp", "clone", "cpu", "cuda", "numpy", "tolist", "item", "to", "float", "half", "masked_fill_",
        "index_copy_", "set_", "data_ptr", "addcmul_", "addcdiv_", "lerp_", "mul", "add", "sign",
    }
)
#: attributes that are tensors on any module or tensor
TENSOR_ATTRIBUTES = frozenset({"weight", "bias", "grad", "running_mean", "running_var"})
PARAMETER_ITERATORS = frozenset({"parameters", "named_parameters", "buffers", "named_buffers"})
TENSOR_FACTORIES = ("torch.",)


class TensorDataAttribute(StaticRule):
    """## What it does
    Finds `.data` on tensors: on a parameter from `model.parameters()`, on `.weight`, `.bias` or
    `.grad`, on a tensor made by a torch factory, on the left of an assignment, or followed by a
    tensor method (`x.data.copy_(...)`, `loss.data.cpu().numpy()`).

    ## Why is this bad?
    `.data` gives a view that autograd does not track: in-place changes through it are invisible
    to the version counter, so a backward that needs the old values silently computes wrong
    gradients instead of raising. `x.detach()` (for reading) and `with torch.no_grad():` (for
    in-place updates) do the same work with autograd's checks intact.

    ## Known problems
    Opt-in: `.data` is also a common attribute of datasets and containers; the rule only looks
    at receivers that show they are tensors, and still sees only syntax.

    ## References
    - [torch.Tensor.detach](https://pytorch.org/docs/stable/generated/torch.Tensor.detach.html)
    - [PyTorch 0.4 migration guide: what about .data?](https://pytorch.org/blog/pytorch-0_4_0-migration-guide/#what-about-data)
    """

    code = "TA634"
    name = "tensor-data-attribute"
    severity = Severity.INFO
    message = "{expr}.data bypasses autograd's checks; use {instead}"
    fix_title = "Use .detach() to read, torch.no_grad() to modify in place"
    opt_in = True

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value != "data":
            return
        stack = self.ctx.stack
        parent = stack[-2] if len(stack) > 1 else None
        receiver = node.value
        written = isinstance(parent, cst.AssignTarget) and parent.target is node
        method = None
        if isinstance(parent, cst.Attribute) and parent.value is node and len(stack) > 2:
            grand = stack[-3]
            if isinstance(grand, cst.Call) and grand.func is parent and parent.attr.value in TENSOR_METHODS:
                method = parent.attr.value
        if not (written or method or self._tensor(receiver)):
            return
        in_place = written or (method is not None and method.endswith("_"))
        self.report(
            node,
            expr=_short(self.ctx.code(receiver)),
            instead="an update under torch.no_grad()" if in_place else f"{_short(self.ctx.code(receiver))}.detach()",
        )

    def _tensor(self, receiver: cst.BaseExpression) -> bool:
        if isinstance(receiver, cst.Attribute):
            return receiver.attr.value in TENSOR_ATTRIBUTES
        if not isinstance(receiver, cst.Name):
            return False
        scope = self.ctx.scope
        for a in scope.assignments.get(receiver.value, []):
            value = a.value
            if a.kind == "for" and isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
                if value.func.attr.value in PARAMETER_ITERATORS:
                    named = value.func.attr.value.startswith("named_")
                    if (a.element == 1) if named else (a.element is None):
                        return True
            if a.kind == "assign" and isinstance(value, cst.Call):
                q = scope.qualname(value.func)
                if q is not None and q.startswith(TENSOR_FACTORIES) and q.rsplit(".", 1)[-1][:1].islower():
                    return True
        return False


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."
