import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import Loop, Scope, Statement
from torch_audit.rule import StaticRule

#: tensor methods whose result still carries the autograd graph of their input
_GRAPH_KEEPING = frozenset(
    {"cpu", "cuda", "to", "float", "double", "half", "bfloat16", "clone", "mean", "sum", "squeeze",
     "unsqueeze", "view", "reshape", "contiguous", "flatten"}
)


class LossAccumulatedWithGraph(StaticRule):
    """## What it does
    Finds a loss tensor that is back-propagated in a loop and also summed or collected across
    the loop's iterations (`total += loss`, `total = total + loss`, `losses.append(loss)`) without
    `.item()` or `.detach()`, while gradients are enabled.

    ## Why is this bad?
    The running total (or the list) holds a reference to every iteration's loss tensor, and each
    of them holds its autograd graph. Memory grows with every iteration until the epoch ends or
    the process runs out of memory, and the code runs slower for no reason. This is the first
    entry of the PyTorch FAQ on memory.

    ## Known problems
    The loss must be the one passed to `backward()` in the same loop (the code then shows it has
    a graph). Combining several losses inside one iteration (`loss = loss + aux`) and collecting
    losses that are back-propagated together after the loop are, correctly, not reported;
    neither is accumulation under `torch.no_grad()`.

    ## References
    - [PyTorch FAQ: my model reports "cuda runtime error(2): out of memory"](https://pytorch.org/docs/stable/notes/faq.html#my-model-reports-cuda-runtime-error-2-out-of-memory)
    """

    code = "TA309"
    name = "loss-accumulated-with-graph"
    severity = Severity.WARNING
    message = (
        "`{accumulator}` collects the loss tensor `{loss}` (back-propagated at line {backward}) across "
        "iterations of the loop at line {loop}: every iteration's autograd graph stays alive"
    )
    fix_title = "Accumulate `loss.item()` (or `loss.detach()`) instead"

    def leave_Module(self, node: cst.Module) -> None:
        for scope in self.ctx.module_scope.walk():
            if scope.kind == "class":
                continue
            for acc, value, where, stmt in self._accumulations(scope):
                loop = stmt.loop
                if loop is None or self.ctx.grad_enabled(stmt) is False:
                    continue
                if self._defined_in(scope, acc, loop, stmt):
                    continue
                loss = _graph_name(value)
                if loss is None:
                    continue
                backward = self._backward_of(scope, loss, stmt, loop, acc)
                if backward is None:
                    continue
                self.report(
                    where,
                    accumulator=acc,
                    loss=loss,
                    backward=self.ctx.training.line(backward),
                    loop=self.ctx.training.line(loop.node),
                )

    def _accumulations(self, scope: Scope):
        """(accumulator name, added value, node to report, statement)."""
        for stmt in scope.statements:
            node = stmt.node
            if not isinstance(node, cst.SimpleStatementLine):
                continue
            for small in node.body:
                if isinstance(small, cst.AugAssign) and isinstance(small.operator, cst.AddAssign):
                    if isinstance(small.target, cst.Name):
                        yield small.target.value, small.value, small, stmt
                elif isinstance(small, cst.Assign) and len(small.targets) == 1:
                    target = small.targets[0].target
                    value = small.value
                    if (
                        isinstance(target, cst.Name)
                        and isinstance(value, cst.BinaryOperation)
                        and isinstance(value.operator, cst.Add)
                        and isinstance(value.left, cst.Name)
                        and value.left.value == target.value
                    ):
                        yield target.value, value.right, small, stmt
        for call in scope.calls:
            if call.method == "append" and isinstance(call.receiver, cst.Name) and len(call.node.args) == 1:
                yield call.receiver.value, call.node.args[0].value, call.node, call.stmt

    def _defined_in(self, scope: Scope, acc: str, loop: Loop, stmt: Statement) -> bool:
        """Is the accumulator (re)started inside the loop (so it lives for one iteration only)?"""
        target = scope.lookup_scope(acc)
        if target is not scope:
            return target is None
        for a in scope.assignments.get(acc, []):
            if a.stmt is None or a.stmt is stmt or not a.stmt.inside(loop):
                continue
            if a.kind == "aug":
                continue
            if a.kind == "assign" and isinstance(a.value, cst.BinaryOperation) and isinstance(a.value.left, cst.Name) and a.value.left.value == acc:
                continue
            return True
        return not any(a.stmt is not None and a.index < loop.stmt.index or a.kind == "param" for a in scope.assignments.get(acc, []))

    def _backward_of(self, scope: Scope, loss: str, stmt: Statement, loop: Loop, acc: str):
        """The backward() call of the same loss value in the same loop, if any."""
        reaching = scope.reaching(loss, stmt.index)
        if reaching is None or reaching.kind == "param":
            return None
        found = None
        for e in self.ctx.training.function_events(scope, depth=0):
            target = e.target
            if e.kind != "backward" or not isinstance(target, cst.Name):
                continue
            if target.value == acc:
                return None  # the total itself is back-propagated: a combined loss on purpose
            if target.value == loss and e.stmt.inside(loop) and scope.reaching(loss, e.stmt.index) is reaching:
                found = found or e.node
        return found


def _graph_name(value: cst.BaseExpression) -> str | None:
    """The name of the tensor whose graph ``value`` keeps (``loss``, ``loss * n``, ``loss.cpu()``)."""
    if isinstance(value, cst.Name):
        return value.value
    if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value in _GRAPH_KEEPING:
        return _graph_name(value.func.value)
    if isinstance(value, cst.BinaryOperation) and isinstance(
        value.operator, (cst.Multiply, cst.Divide, cst.Add, cst.Subtract)
    ):
        left = _graph_name(value.left)
        return left if left is not None else _graph_name(value.right)
    if isinstance(value, cst.UnaryOperation):
        return _graph_name(value.expression)
    return None
