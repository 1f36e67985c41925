import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import argument, fixes, tensors
from torch_audit.rule import StaticRule

#: reductions that give a 0-dim tensor when called with no dimension
REDUCTIONS = frozenset({"sum", "mean", "prod", "norm", "max", "min", "std", "var", "median", "amax", "amin"})
#: ``torch.nn.functional`` losses (reduction="mean" by default: a 0-dim result)
FUNCTIONAL_LOSSES = frozenset(
    {
        "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
        "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "poisson_nll_loss",
        "gaussian_nll_loss", "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss",
        "multilabel_margin_loss", "hinge_embedding_loss", "cosine_embedding_loss",
        "margin_ranking_loss", "triplet_margin_loss", "ctc_loss",
    }
)
_MAX_DEPTH = 6


class _Losses:
    """``torch.nn`` loss classes whose default result is 0-dim (not
    ``AdaptiveLogSoftmaxWithLoss``, which returns a named tuple)."""

    def __contains__(self, name: str) -> bool:
        return name.endswith("Loss") and name != "AdaptiveLogSoftmaxWithLoss"


_SCALAR_LOSSES = _Losses()
#: module methods that return the module itself
_MODULE_MOVES = frozenset({"cuda", "to", "cpu", "float", "double", "half", "train", "eval"})


class ZeroDimTensorIndexed(StaticRule):
    """## What it does
    Finds `loss.data[0]` and `loss[0]` on a tensor that is known to be 0-dim: the result of a
    loss (`F.cross_entropy(...)`, `criterion(...)` with `criterion = nn.MSELoss()`) with its
    default reduction, or of `.sum()`/`.mean()`/`torch.sum(x)` without a dimension.

    ## Why is this bad?
    Before PyTorch 0.4 a loss was a 1-element tensor and `loss.data[0]` read its value. Since
    0.4 it is 0-dim, and indexing it raises `IndexError: invalid index of a 0-dim tensor. Use
    tensor.item()`: code copied from old tutorials crashes at its first logging step. TorchFix
    does not know this one.

    ## Known problems
    Only tensors whose 0-dim shape the code shows are reported (a loss module passed to a
    function counts when every caller in the file passes one): a loss called with
    `reduction="none"` (or `reduce=`, `size_average=`), a reduction over a dimension, or a value
    that went through anything else is not.

    ## Fix safety
    `x.data[0]` becomes `x.item()`: it returned a Python number before 0.4 and fails today, so
    the fix is safe. `x[0]` becomes `x.item()` as an unsafe fix: the old `x[0]` was a tensor,
    and code after it may rely on that.

    ## References
    - [PyTorch 0.4 migration guide: accessing the value of a 0-dim tensor](https://pytorch.org/blog/pytorch-0_4_0-migration-guide/#zero-dimensional-scalar-tensors)
    - [torch.Tensor.item](https://pytorch.org/docs/stable/generated/torch.Tensor.item.html)
    """

    code = "TA608"
    name = "zero-dim-tensor-indexed"
    severity = Severity.ERROR
    message = "`{expr}` indexes a 0-dim tensor ({why}): IndexError since PyTorch 0.4"
    fix_title = "Use `{name}.item()`"
    fixable = "sometimes"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list = []
        self._through_data = False

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
            return
        index = node.slice[0].slice.value
        if not isinstance(index, cst.Integer):
            return
        value = node.value
        through_data = isinstance(value, cst.Attribute) and value.attr.value == "data"
        tensor = value.value if through_data else value
        stmt, scope = self.ctx.statement, self.ctx.scope
        if stmt is None or scope is None:
            return
        if self._assigned_to(node):
            return  # `loss[0] = ...`: a write, a different error
        self._pending.append((node, tensor, through_data, scope, stmt.index))

    def leave_Module(self, original_node: cst.Module) -> None:
        # decided at the end: the callers of a function may come later in the file
        for node, tensor, through_data, scope, at in self._pending:
            self._through_data = through_data
            why = self._zero_dim(tensor, scope, at, 0)
            if why is None:
                continue
            self.report(
                node,
                expr=_short(self.ctx.code(node)),
                why=why,
                name=_short(self.ctx.code(tensor)),
                fix=self._fix(node, tensor, safe=through_data),
            )

    def _assigned_to(self, node: cst.Subscript) -> bool:
        stack = self.ctx.stack
        parent = stack[-2] if len(stack) > 1 else None
        return isinstance(parent, (cst.AssignTarget, cst.AugAssign)) and getattr(parent, "target", None) is node

    def _zero_dim(self, expr: cst.BaseExpression, scope, at: int, depth: int) -> str | None:
        """Why ``expr`` is known to be a 0-dim tensor, else None."""
        if depth > _MAX_DEPTH:
            return None
        if isinstance(expr, cst.Name):
            a = self.ctx.dataflow.reaching(expr.value, scope, at)
            owner = scope.lookup_scope(expr.value) or scope
            defs = [d for d in owner.assignments.get(expr.value, []) if d.kind != "import"]
            if a is None or a.kind != "assign" or a.value is None or a.stmt is None:
                return None
            if len(defs) > 1:
                # re-bound (a loop, a branch): every definition must be 0-dim
                if not all(d.kind == "assign" and d.stmt is not None and d.value is not None for d in defs):
                    return None
                if any(self._zero_dim(d.value, d.stmt.scope, d.index, depth + 1) is None for d in defs):
                    return None
            return self._zero_dim(a.value, a.stmt.scope, a.index, depth + 1)
        if isinstance(expr, cst.BinaryOperation) and isinstance(
            expr.operator, (cst.Add, cst.Subtract, cst.Multiply, cst.Divide)
        ):
            left = self._zero_dim(expr.left, scope, at, depth + 1) if not _literal(expr.left) else "a number"
            right = self._zero_dim(expr.right, scope, at, depth + 1) if not _literal(expr.right) else "a number"
            if left is None or right is None:
                return None
            return left if left != "a number" else (right if right != "a number" else None)
        if not isinstance(expr, cst.Call):
            return None
        q = self.ctx.qualname(expr.func, scope)
        if q is not None:
            head, _, last = q.rpartition(".")
            if head == "torch.nn.functional" and last in FUNCTIONAL_LOSSES:
                return "a loss with reduction='mean'" if _default_reduction(expr, positional=3) else None
            if head == "torch" and last in REDUCTIONS and len(expr.args) == 1 and expr.args[0].keyword is None:
                return f"torch.{last}() over all elements"
            return None
        func = expr.func
        if isinstance(func, cst.Attribute) and func.attr.value in REDUCTIONS and not expr.args:
            # a DataFrame's .sum() is a Series, which x[0] indexes fine: the receiver must be
            # a tensor, or the value read through `.data` (which DataFrames do not have)
            if self._through_data or self._tensor(func.value, scope, at):
                return f".{func.attr.value}() over all elements"
            return None
        if isinstance(func, (cst.Name, cst.Attribute)):
            loss = self._loss_module(func, scope, at)
            if loss is None and isinstance(func, cst.Name):
                loss = self._loss_from_callers(func.value, scope, depth)
            if loss is not None:
                return f"a {loss} with reduction='mean'"
        if isinstance(func, cst.Call):
            loss = self._loss_module(func, scope, at)
            if loss is not None:
                return f"a {loss} with reduction='mean'"
        return None

    def _loss_module(self, expr: cst.BaseExpression, scope, at: int) -> str | None:
        """``nn.XLoss()`` with its default reduction built for ``expr`` (also
        ``nn.CrossEntropyLoss().cuda()``), by its class name."""
        if isinstance(expr, cst.Call):
            func = expr.func
            if isinstance(func, cst.Attribute) and func.attr.value in _MODULE_MOVES:
                return self._loss_module(func.value, scope, at)
            q = self.ctx.qualname(func, scope)
            if q and q.rpartition(".")[0] == "torch.nn" and q.rpartition(".")[2] in _SCALAR_LOSSES \
                    and _default_reduction(expr, positional=1):
                return q.rpartition(".")[2]
            return None
        if not isinstance(expr, (cst.Name, cst.Attribute)):
            return None
        src = self.ctx.dataflow.constructor_source(expr, scope, at)
        if src is not None and isinstance(src.node, cst.Call):
            return self._loss_module(src.node, scope, at)
        return None

    def _loss_from_callers(self, name: str, scope, depth: int) -> str | None:
        """``name`` is a parameter of a function whose every caller in this file passes a loss
        module for it (``train(loader, model, criterion)`` with
        ``criterion = nn.CrossEntropyLoss().cuda()``)."""
        if scope.kind != "function" or name not in scope.params or depth > 2:
            return None
        position = scope.params.index(name)
        if scope.class_scope is not None:
            position -= 1  # self
        callers = self.ctx.training.callers(scope)
        found = None
        for call in callers:
            arg = argument(call.node, position, name) if position >= 0 else None
            if arg is None:
                return None
            loss = self._loss_module(arg.value, call.scope, call.stmt.index)
            if loss is None:
                return None
            found = loss
        return found

    def _tensor(self, expr: cst.BaseExpression, scope, at: int) -> bool:
        if isinstance(expr, cst.Call):
            q = self.ctx.qualname(expr.func, scope)
            return q is not None and q.startswith("torch.") and q.rsplit(".", 1)[-1][:1].islower()
        if isinstance(expr, (cst.Name, cst.Attribute)):
            return tensors(self.ctx).is_tensor(expr, scope, at)
        return False

    def _fix(self, node: cst.Subscript, tensor: cst.BaseExpression, safe: bool) -> Fix | None:
        if fixes.comments_in(node, keep=[tensor]):
            return None
        text = fixes.source_of(self.ctx, tensor)
        if not isinstance(tensor, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) and not tensor.lpar:
            text = f"({text})"
        applicability = Applicability.SAFE if safe else Applicability.UNSAFE
        return Fix("Use .item()", applicability, (fixes.replace(self.ctx, node, f"{text}.item()"),))


def _default_reduction(call: cst.Call, positional: int) -> bool:
    """No ``reduction=`` other than "mean"/"sum", no legacy ``reduce=``/``size_average=``, and
    at most ``positional`` positional arguments (more may be a positional ``reduction``)."""
    if sum(1 for a in call.args if a.keyword is None) > positional:
        return False
    for arg in call.args:
        if arg.star:
            return False
        if arg.keyword is None:
            continue
        key = arg.keyword.value
        if key in ("reduce", "size_average"):
            return False
        if key == "reduction":
            value = arg.value
            return isinstance(value, cst.SimpleString) and value.evaluated_value in ("mean", "sum")
    return True


def _literal(expr: cst.BaseExpression) -> bool:
    return isinstance(expr, (cst.Integer, cst.Float))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 50 else text[:47] + "..."
