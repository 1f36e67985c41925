import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import dotted, fixes, tensors
from torch_audit.rule import StaticRule

#: method → (positional arguments of the deprecated overload, keyword the scalar becomes)
OVERLOADS = {
    "add_": (2, "alpha"), "add": (2, "alpha"), "sub_": (2, "alpha"), "sub": (2, "alpha"),
    "addcmul_": (3, "value"), "addcmul": (3, "value"), "addcdiv_": (3, "value"), "addcdiv": (3, "value"),
}
#: names a learning rate or another scalar factor goes by (``p.add_(-lr, g)``,
#: ``exp_avg.mul_(beta1).add_(1 - beta1, grad)``)
_SCALAR_NAMES = ("lr", "alpha", "beta", "step_size", "weight_decay", "momentum", "scale", "value", "eps", "rate")


class DeprecatedScalarFirstOverload(StaticRule):
    """## What it does
    Finds the deprecated scalar-first overloads of tensor arithmetic, such as
    `p.data.add_(-lr, grad)`. Also `x.sub_(alpha, y)`,
    `exp_avg_sq.addcmul_(1 - beta2, grad, grad)`, `addcdiv_(-step_size, exp_avg, denom)` and
    the out-of-place forms.

    ## Why is this bad?
    Since PyTorch 1.5 the scalar is the keyword-only `alpha=` (for `add`/`sub`) or `value=` (for
    `addcmul`/`addcdiv`): `p.add_(grad, alpha=-lr)`. The scalar-first form warns
    ("This overload of add_ is deprecated") on every call, is kept only for old code, and reads
    backwards: in `p.add_(-lr, grad)` the tensor that is added is the second argument. Code
    copied from pre-1.5 optimizers (Adam, LAMB, RAdam implementations) is full of it; TorchFix
    does not know it.

    ## Known problems
    In-place forms (`add_`, `sub_`, `addcmul_`, `addcdiv_`) with the deprecated number of
    positional arguments are reported when the first argument looks like a number (a literal,
    a negation, `1 - beta`, a name like `lr`/`alpha`/`step_size`, `group["lr"]`), or when the
    receiver is known to be a tensor; out-of-place forms (`add`, `sub`, ...) only when the
    receiver is known to be a tensor (`p.data`, `p.grad`, a parameter, a tensor the file
    builds), since other objects have `add` methods of their own.

    ## Fix safety
    `x.add_(a, b)` becomes `x.add_(b, alpha=a)` and `x.addcmul_(v, t1, t2)` becomes
    `x.addcmul_(t1, t2, value=v)`: the same call of the current signature, same result. The fix
    is safe. Not fixed: calls with keywords, starred arguments or comments inside.

    ## References
    - [torch.Tensor.add_](https://pytorch.org/docs/stable/generated/torch.Tensor.add_.html)
    - [torch.addcmul](https://pytorch.org/docs/stable/generated/torch.addcmul.html)
    - [pytorch/pytorch#32861: deprecate the scalar-first overloads](https://github.com/pytorch/pytorch/pull/32861)
    """

    code = "TA607"
    name = "deprecated-scalar-first-overload"
    severity = Severity.WARNING
    message = "`{call}` uses the deprecated scalar-first overload of {method}(); the scalar is the keyword {keyword}="
    fix_title = "Pass the tensor(s) first and the scalar as `{keyword}=`"
    fixable = "always"

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute):
            return
        method = func.attr.value
        overload = OVERLOADS.get(method)
        if overload is None:
            return
        count, keyword = overload
        args = node.args
        if len(args) != count or any(a.keyword is not None or a.star for a in args):
            return
        if self.ctx.qualname(func) is not None:
            return  # torch.add(input, other): a function, not the method overload
        receiver = func.value
        known_tensor = self._tensor(receiver)
        if not known_tensor and (not method.endswith("_") or not _number_like(args[0].value)):
            return
        if any(isinstance(a.value, (cst.Integer, cst.Float, cst.SimpleString)) for a in args[1:]):
            return  # a literal where the overload takes tensors: another object's method
        self.report(
            node,
            call=_short(self.ctx.code(node)),
            method=method,
            keyword=keyword,
            fix=self._fix(node, keyword),
        )

    def _tensor(self, receiver: cst.BaseExpression) -> bool:
        if isinstance(receiver, cst.Attribute) and receiver.attr.value == "grad":
            return True
        if isinstance(receiver, cst.Attribute) and receiver.attr.value == "data":
            # p.data of a tensor; `self.data` is a dataset or a container as often as not
            inner = receiver.value
            if isinstance(inner, cst.Name) and inner.value in ("self", "cls"):
                return False
            return self._tensor(inner) or not isinstance(inner, cst.Name) or self._named_like_tensor(inner)
        if isinstance(receiver, cst.Call) and isinstance(receiver.func, cst.Attribute):
            # exp_avg.mul_(beta1).add_(1 - beta1, grad): the in-place chain returns the tensor
            return receiver.func.attr.value in _IN_PLACE_RETURNING
        scope, stmt = self.ctx.scope, self.ctx.statement
        if isinstance(receiver, (cst.Name, cst.Attribute)) and scope is not None and stmt is not None:
            return tensors(self.ctx).is_tensor(receiver, scope, stmt.index)
        return False

    def _named_like_tensor(self, name: cst.Name) -> bool:
        """``p``/``param``/``weight``...: the usual names of the parameters an optimizer loop
        updates through ``.data``."""
        return name.value in ("p", "param", "parameter", "w", "weight", "bias", "buf", "tensor", "t", "x")

    def _fix(self, node: cst.Call, keyword: str) -> Fix | None:
        if fixes.comments_in(node):
            return None
        scalar, *rest = node.args
        texts = [fixes.source_of(self.ctx, a.value) for a in rest]
        scalar_text = fixes.source_of(self.ctx, scalar.value)
        if any("\n" in t for t in (*texts, scalar_text)):
            return None
        func = fixes.source_of(self.ctx, node.func)
        if "\n" in func:
            return None
        text = f"{func}({', '.join(texts)}, {keyword}={scalar_text})"
        return Fix(f"Pass {keyword}= as a keyword", Applicability.SAFE, (fixes.replace(self.ctx, node, text),))


#: in-place methods whose result is the tensor itself
_IN_PLACE_RETURNING = frozenset({"mul_", "add_", "sub_", "div_", "addcmul_", "addcdiv_", "lerp_", "clamp_", "zero_"})


def _number_like(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, (cst.Integer, cst.Float)):
        return True
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
        return True
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Subtract, cst.Add, cst.Multiply, cst.Divide)):
        return _number_like(expr.left) or _number_like(expr.right)
    if isinstance(expr, cst.Subscript) and isinstance(expr.value, cst.Name):
        key = expr.slice[0].slice if len(expr.slice) == 1 else None
        if isinstance(key, cst.Index) and isinstance(key.value, cst.SimpleString):
            return _scalar_name(str(key.value.evaluated_value))
        return False
    name = dotted(expr)
    return name is not None and _scalar_name(name.rsplit(".", 1)[-1])


def _scalar_name(name: str) -> bool:
    low = name.lower()
    return any(low == n or low.startswith(n + "_") or low.endswith("_" + n) or low.rstrip("0123456789") == n
               for n in _SCALAR_NAMES)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
