import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule

NAN_CONSTANTS = frozenset({"math.nan", "torch.nan", "numpy.nan", "numpy.NaN", "numpy.NAN", "cmath.nan"})
_NAN_STRINGS = frozenset({"nan", "+nan", "-nan"})


class NanEqualityComparison(StaticRule):
    """## What it does
    Finds `==` and `!=` comparisons with a NaN constant: `float("nan")`, `math.nan`,
    `torch.nan`, `np.nan`.

    ## Why is this bad?
    NaN compares unequal to everything, itself included: `x == float("nan")` is always False
    and `x != torch.nan` always True, element-wise for tensors too. A NaN check written this way
    never detects anything, and the NaN it was meant to catch propagates silently.

    ## References
    - [torch.isnan](https://pytorch.org/docs/stable/generated/torch.isnan.html)
    - [IEEE 754 NaN comparisons (Python docs, math.isnan)](https://docs.python.org/3/library/math.html#math.isnan)
    """

    code = "TA108"
    name = "nan-equality-comparison"
    severity = Severity.ERROR
    message = "`{expr}` is always {result}: NaN is unequal to everything, itself included"
    fix_title = "Use torch.isnan(x) for tensors (math.isnan / np.isnan for floats and arrays)"

    def visit_Comparison(self, node: cst.Comparison) -> None:
        left = node.left
        for target in node.comparisons:
            op = target.operator
            right = target.comparator
            if isinstance(op, (cst.Equal, cst.NotEqual)) and (self._is_nan(left) or self._is_nan(right)):
                self.report(
                    node,
                    expr=self.ctx.code(node).strip(),
                    result="False" if isinstance(op, cst.Equal) else "True",
                )
                return
            left = right

    def _is_nan(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
            expr = expr.expression
        if isinstance(expr, (cst.Attribute, cst.Name)):
            return self.ctx.qualname(expr) in NAN_CONSTANTS
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "float":
            if self.ctx.scope.lookup_scope("float") is not None:
                return False  # a local name shadows the builtin
            if len(expr.args) == 1 and isinstance(expr.args[0].value, cst.SimpleString):
                value = expr.args[0].value.evaluated_value
                return isinstance(value, str) and value.strip().lower() in _NAN_STRINGS
        return False
