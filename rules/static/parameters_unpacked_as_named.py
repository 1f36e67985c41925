import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import dotted, fixes
from torch_audit.rule import StaticRule

#: iterator methods of nn.Module that yield single objects → their named counterpart
_NAMED = {
    "parameters": "named_parameters",
    "buffers": "named_buffers",
    "modules": "named_modules",
    "children": "named_children",
}


class ParametersUnpackedAsNamed(StaticRule):
    """## What it does
    Finds `for name, p in model.parameters()` (and the same with `buffers()`, `modules()`,
    `children()`), where the `named_*` iterator that yields `(name, object)` pairs was meant.

    ## Why is this bad?
    `parameters()` yields tensors, not pairs. Unpacking a tensor into two names iterates over its
    first dimension: it raises `ValueError` for most parameters, but a parameter whose first
    dimension is 2 (a `Linear(…, 2)` head, a 2-channel convolution) unpacks silently into two rows,
    and the loop body then works on the wrong objects. With `modules()`/`children()` the unpacking
    fails only at run time, often far into a script.

    ## Fix safety
    The fix calls the `named_` variant: `model.parameters()` becomes `model.named_parameters()`
    (`buffers`, `modules`, `children` likewise). It is safe: the loop unpacks (name, value)
    pairs, which only the named variant yields; as written it fails or unpacks tensors.

    ## References
    - [torch.nn.Module.named_parameters](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.named_parameters)
    """

    code = "TA313"
    name = "parameters-unpacked-as-named"
    severity = Severity.ERROR
    message = "`{call}` yields single {what}, not (name, {what_one}) pairs"
    fix_title = "Iterate over `{fixed}` instead"
    fixable = "always"

    def visit_For(self, node: cst.For) -> None:
        self._check(node.target, node.iter)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._check(node.target, node.iter)

    def _check(self, target: cst.BaseExpression, iterable: cst.BaseExpression) -> None:
        if not isinstance(target, (cst.Tuple, cst.List)) or len(target.elements) != 2:
            return
        if any(isinstance(e, cst.StarredElement) for e in target.elements):
            return
        if not isinstance(iterable, cst.Call) or not isinstance(iterable.func, cst.Attribute):
            return
        method = iterable.func.attr.value
        if method not in _NAMED or self.ctx.qualname(iterable.func) is not None:
            return
        receiver = dotted(iterable.func.value) or "model"
        what = {"parameters": "parameters", "buffers": "buffers", "modules": "modules", "children": "modules"}[method]
        self.report(
            iterable,
            call=f"{receiver}.{method}()",
            what=what,
            what_one=what[:-1],
            fixed=f"{receiver}.{_NAMED[method]}()",
            fix=Fix(
                f"Use {_NAMED[method]}()",
                Applicability.SAFE,
                (fixes.replace(self.ctx, iterable.func.attr, _NAMED[method]),),
            ),
        )
