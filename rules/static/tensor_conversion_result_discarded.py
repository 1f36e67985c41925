import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import MODULE, dotted, fixes, tensors
from torch_audit.rule import StaticRule

#: tensor methods that return a converted copy and leave the tensor itself unchanged
_CONVERSIONS = frozenset(
    {"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "long", "int", "bool", "short",
     "byte", "char", "type", "contiguous", "pin_memory", "xpu", "mps"}
)


class TensorConversionResultDiscarded(StaticRule):
    """## What it does
    Finds `x.to(device)`, `x.cuda()`, `x.float()`, `x.half()` and the other conversion methods
    called as a bare statement on a tensor, so that the converted tensor is thrown away.

    ## Why is this bad?
    `nn.Module.to()`/`.cuda()`/`.float()` convert a module in place, but the same methods on a
    tensor return a new tensor and leave the original untouched. `x.to(device)` on its own line
    does nothing: `x` stays on the CPU (or in float32) and the code fails later with a device
    mismatch, or silently runs in the wrong precision or on the wrong device.

    ## Known problems
    The rule reports only when provenance shows a tensor: a `torch.*` tensor factory or op,
    `nn.Parameter(...)`, an element unpacked from a `DataLoader` batch, a parameter annotated
    `torch.Tensor`, or tensor methods and indexing of those. A value whose kind the code does not
    show (a parameter without annotation, the result of an unknown call) is not reported, so many
    real cases are missed. Objects with an in-place `.to()` of their own (Hugging Face
    `BatchEncoding`, PyG `Data`) are never reported.

    ## Fix safety
    When the receiver is a plain name, the fix assigns the result back to it: `x.to(device)`
    becomes `x = x.to(device)`. It is safe: it makes the statement do what it was written for.
    Not fixed: attributes and other receivers (`self.scale.cuda()` on a parameter would need
    re-registration), and a name that is not local to the function (assigning it would make it
    local and break earlier reads).

    ## References
    - [torch.Tensor.to](https://pytorch.org/docs/stable/generated/torch.Tensor.to.html)
    - [torch.nn.Module.to (in place)](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.to)
    """

    code = "TA311"
    name = "tensor-conversion-result-discarded"
    severity = Severity.ERROR
    message = "`{text}` returns a new tensor that is discarded; {obj} itself is not converted"
    fix_title = "Assign the result: `{obj} = {text}`"
    fixable = "sometimes"

    def visit_Expr(self, node: cst.Expr) -> None:
        call = node.value
        if not isinstance(call, cst.Call) or not isinstance(call.func, cst.Attribute):
            return
        method = call.func.attr.value
        if method not in _CONVERSIONS:
            return
        if method == "type" and not call.args:
            return  # x.type() returns the type name
        receiver = call.func.value
        stmt = self.ctx.statement
        if stmt is None:
            return
        facts = tensors(self.ctx)
        kind = facts.kind(receiver, self.ctx.scope, stmt.index)
        if kind is None or kind == MODULE:
            return
        obj = dotted(receiver) or self.ctx.code(receiver)
        text = self.ctx.code(call).strip()
        if len(text) > 60:
            text = f"{obj}.{method}(...)"
        self.report(call, text=text, obj=obj, fix=self._fix(call, receiver))

    def _fix(self, call: cst.Call, receiver: cst.BaseExpression) -> Fix | None:
        """`x.to(device)` → `x = x.to(device)` for a plain local (or module-level) name."""
        if not isinstance(receiver, cst.Name):
            return None
        name = receiver.value
        scope = self.ctx.scope
        if scope.kind == "function":
            if name not in scope.assignments and name not in scope.declared_outer:
                return None  # assigning would make a global/closure name local
        elif scope.kind != "module":
            return None
        line, column = fixes.span(self.ctx, call, parens=True)[:2]
        return Fix(f"Assign the result to {name}", Applicability.SAFE, (fixes.insert(line, column, f"{name} = "),))
