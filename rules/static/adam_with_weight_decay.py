import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import argument, bool_argument, fixes
from torch_audit.rule import StaticRule

_ADAM = frozenset({"torch.optim.Adam", "torch.optim._multi_tensor.Adam"})


class AdamWithWeightDecay(StaticRule):
    """## What it does
    Finds `torch.optim.Adam(..., weight_decay=<positive number>)`, where `torch.optim.AdamW`
    (decoupled weight decay) is almost always what is meant.

    ## Why is this bad?
    Adam's `weight_decay` adds an L2 penalty to the gradient, which Adam then rescales by its
    adaptive step size: parameters with large gradient variance are barely regularised, the
    effective decay changes with the learning rate schedule, and the tuned value does not carry
    over from AdamW recipes. Loshchilov & Hutter showed that decoupled weight decay (AdamW)
    regularises as intended and generalises better; most modern recipes that say "Adam with weight
    decay" mean AdamW.

    ## Known problems
    L2-regularised Adam is occasionally what a paper specifies; suppress the finding there. Only a
    literal positive value (directly or through a name assigned once) is reported: a value
    from configuration is unknown and not reported, and neither is
    `decoupled_weight_decay=True` (PyTorch 2.6+, which makes Adam behave as AdamW).

    ## Fix safety
    The fix switches to `torch.optim.AdamW` with the same arguments (`optim.Adam(...)` becomes
    `optim.AdamW(...)`, through the same module alias). It is unsafe: the regularisation
    changes from L2 added to the gradient to decoupled decay, so the same `weight_decay` value
    regularises differently and the training run (and its tuned hyper-parameters) change.
    Not fixed: a bare `Adam` imported by name (it would need a new import), a call passing
    `decoupled_weight_decay`, and `torch.optim._multi_tensor.Adam`.

    ## References
    - [Loshchilov & Hutter, Decoupled Weight Decay Regularization](https://arxiv.org/abs/1711.05101)
    - [torch.optim.AdamW](https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html)
    """

    code = "TA402"
    name = "adam-with-weight-decay"
    severity = Severity.WARNING
    message = "Adam with weight_decay={value} applies L2 regularisation scaled by the adaptive step, not decoupled weight decay"
    fix_title = "Use torch.optim.AdamW (decoupled weight decay)"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        for call in self.ctx.indexer.all_calls:
            if call.qualname not in _ADAM:
                continue
            arg = argument(call.node, 4, "weight_decay")
            if arg is None:
                continue
            if bool_argument(call.node, None, "decoupled_weight_decay") is not False and argument(
                call.node, None, "decoupled_weight_decay"
            ) is not None:
                continue
            value = self._number(arg.value, call.scope, call.stmt.index)
            if value is None or value <= 0:
                continue
            self.report(arg, value=self.ctx.code(arg.value).strip(), fix=self._fix(call))

    def _fix(self, call) -> Fix | None:
        """`torch.optim.Adam(...)` → `torch.optim.AdamW(...)` through the same alias."""
        func = call.node.func
        if call.qualname != "torch.optim.Adam" or not isinstance(func, cst.Attribute) or func.attr.value != "Adam":
            return None
        if argument(call.node, None, "decoupled_weight_decay") is not None:
            return None
        if any(a.star for a in call.node.args):
            return None
        return Fix("Use AdamW", Applicability.UNSAFE, (fixes.replace(self.ctx, func.attr, "AdamW"),))

    def _number(self, expr: cst.BaseExpression, scope, at: int) -> float | None:
        if isinstance(expr, (cst.Integer, cst.Float)):
            try:
                return float(expr.evaluated_value)
            except (TypeError, ValueError):
                return None
        if isinstance(expr, cst.Name):
            owner = scope.lookup_scope(expr.value)
            if owner is None:
                return None
            defs = [d for d in owner.assignments.get(expr.value, []) if d.kind != "import"]
            if len(defs) == 1 and defs[0].kind == "assign" and isinstance(defs[0].value, (cst.Integer, cst.Float)):
                return self._number(defs[0].value, owner, defs[0].index)
        return None
