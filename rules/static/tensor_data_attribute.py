import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import tensors
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
    Opt-in: `.data` is also a common attribute of datasets, configurations, named tuples and
    `PackedSequence`s; the rule needs evidence that the receiver is a tensor: a parameter
    (`model.parameters()`, `.weight`, `.bias`, `.grad`), a buffer the class registers
    (`self.register_buffer("x", ...)`), a tensor the file builds or a parameter annotated
    `torch.Tensor`, or a tensor built by torch assigned to an attribute's `.data`.
    A method called on `.data` is no evidence (`packed.data.zero_()` only shows that the field
    is a tensor). `self.data`, `args.data`, `cfg.task.data` are never reported.

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
        if _never_a_tensor(receiver):
            return
        written = isinstance(parent, cst.AssignTarget) and parent.target is node
        chain = _chained_methods(stack)
        # evidence about the receiver, not about `.data`: `packed.data.zero_()` shows that
        # PackedSequence's field is a tensor, not that `packed` is one
        evidence = self._tensor(receiver)
        if written and not evidence:
            assign = stack[-3] if len(stack) > 2 else None
            evidence = (
                isinstance(assign, cst.Assign)
                and isinstance(receiver, (cst.Attribute, cst.Subscript))
                and self._torch_value(assign.value)
            )
        if not evidence:
            return  # `self.data = dataset`, `args.data`, a namedtuple field: not a tensor
        method = chain[0] if chain else None
        in_place = written or (method is not None and method.endswith("_"))
        self.report(
            node,
            expr=_short(self.ctx.code(receiver)),
            instead="an update under torch.no_grad()" if in_place else f"{_short(self.ctx.code(receiver))}.detach()",
        )

    def _registered_buffer(self, receiver: cst.BaseExpression) -> bool:
        """``self.x`` where the class calls ``self.register_buffer("x", ...)``: a tensor."""
        if not (isinstance(receiver, cst.Attribute) and isinstance(receiver.value, cst.Name)
                and receiver.value.value == "self"):
            return False
        scope = self.ctx.scope
        cls = scope.class_scope if scope is not None else None
        if cls is None:
            return False
        for inner in cls.walk():
            for call in inner.calls:
                if call.method != "register_buffer" or not call.node.args:
                    continue
                name = call.node.args[0].value
                if isinstance(name, cst.SimpleString) and name.evaluated_value == receiver.attr.value:
                    return True
        return False

    def _torch_value(self, value: cst.BaseExpression) -> bool:
        """A tensor built by torch: ``torch.zeros_like(...)``, ``torch.tensor(...)``."""
        if isinstance(value, cst.Call):
            q = self.ctx.qualname(value.func)
            return q is not None and q.startswith(TENSOR_FACTORIES) and q.rsplit(".", 1)[-1][:1].islower()
        return False

    def _tensor(self, receiver: cst.BaseExpression) -> bool:
        if isinstance(receiver, cst.Attribute) and receiver.attr.value in TENSOR_ATTRIBUTES:
            return True
        if self._registered_buffer(receiver):
            return True
        scope = self.ctx.scope
        stmt = self.ctx.statement
        if isinstance(receiver, (cst.Name, cst.Attribute)) and scope is not None and stmt is not None:
            try:
                if tensors(self.ctx).is_tensor(receiver, scope, stmt.index):
                    return True
            except RecursionError:  # pragma: no cover - defensive
                return False
        if not isinstance(receiver, cst.Name):
            return False
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


def _never_a_tensor(receiver: cst.BaseExpression) -> bool:
    """``self.data``/``cls.data``: an attribute of an object (a dataset, a module), not of a
    tensor (``self`` is a tensor only in a Tensor subclass)."""
    return isinstance(receiver, cst.Name) and receiver.value in ("self", "cls")


def _chained_methods(stack: list[cst.CSTNode]) -> list[str]:
    """The methods called on the ``.data`` at the top of ``stack`` and on their results:
    ``x.data.cpu().numpy()`` → ``["cpu", "numpy"]``."""
    out: list[str] = []
    i = len(stack) - 1
    node = stack[i]
    while i >= 2:
        attr, call = stack[i - 1], stack[i - 2]
        if not (isinstance(attr, cst.Attribute) and attr.value is node and isinstance(call, cst.Call) and call.func is attr):
            break
        out.append(attr.attr.value)
        node = call
        i -= 2
    return out


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."
