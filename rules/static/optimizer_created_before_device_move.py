import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import covers, dotted, optimizer_constructions
from torch_audit.rule import StaticRule

_MOVES = frozenset({"cuda", "to", "xpu", "mps", "npu"})
#: optimizers that create per-parameter state in their constructor (on the parameters' device)
_EAGER_STATE = frozenset({"Adagrad"})


class OptimizerCreatedBeforeDeviceMove(StaticRule):
    """## What it does
    Finds `model.cuda()` / `model.to(device)` called after an optimizer was built from
    `model.parameters()` in the same function.

    ## Why is this bad?
    The PyTorch docs ask to move a model before constructing its optimizer. Today `Module.to()`
    and `.cuda()` move parameters in place (the `Parameter` objects the optimizer holds stay the
    same), so for most optimizers the late move is harmless. It still breaks when the optimizer
    already has state on the old device: `Adagrad` creates its state in the constructor, any
    optimizer has state after a step or after `load_state_dict`, and the next `step()` fails with
    a device mismatch. It also breaks when the move creates new parameter objects
    (`torch.__future__.set_overwrite_module_params_on_conversion(True)`, some XLA backends) and
    with sharding wrappers (FSDP, DeepSpeed) applied after the optimizer. Building the optimizer
    last is never wrong.

    ## Known problems
    Preview: in the common case (Adam/SGD/AdamW built and never stepped before the move, on a
    standard CUDA device) the order is harmless since the in-place `.to()`, so the rule reports a
    risk rather than a certain bug. Only moves of the same object (or a sub-module of it) in the
    same function are followed. A move back to the device after a trip to the CPU (checkpointing:
    `model.cpu()`, save, `model.to(device)`) is not reported, nor a move of a model that was
    already moved before its optimizer was built.

    ## References
    - [torch.optim: constructing it](https://pytorch.org/docs/stable/optim.html#constructing-it)
    - [pytorch/pytorch#7844: moving after construction works, except with eager optimizer state](https://github.com/pytorch/pytorch/issues/7844)
    """

    code = "TA403"
    name = "optimizer-created-before-device-move"
    severity = Severity.WARNING
    status = "preview"
    message = "`{move}` moves the parameters after {optimizer} was built from `{owner}.parameters()` at line {line}{extra}"
    fix_title = "Move the model to its device first, then build the optimizer"

    def leave_Module(self, node: cst.Module) -> None:
        for opt in optimizer_constructions(self.ctx):
            if not opt.params:
                continue
            scope = opt.call.scope
            line = self.ctx.position(opt.call.node).start.line
            for call in scope.calls:
                if call.stmt.index <= opt.call.stmt.index or call.method not in _MOVES:
                    continue
                if call.receiver is None or call.qualname is not None:
                    continue
                if call.method == "to" and not _looks_like_device(self.ctx, call.node):
                    continue
                subject = dotted(call.receiver)
                if subject is None:
                    continue
                owners = [p.owner for p in opt.params if covers(p.owner, subject)]
                if not owners:
                    continue
                if _already_on_device(self.ctx, scope, owners[0], opt.call.stmt.index) or _round_trip(
                    self.ctx, scope, subject, opt.call.stmt.index, call.stmt.index
                ):
                    continue  # back from a CPU round trip (checkpointing): nothing new moves
                extra = "; Adagrad's state was created on the old device" if opt.name in _EAGER_STATE else ""
                self.report(
                    call.node,
                    move=f"{subject}.{call.method}(...)",
                    optimizer=opt.name,
                    owner=owners[0],
                    line=line,
                    extra=extra,
                )
                break


#: methods that return the module itself: `model.eval().cpu()` moves `model`
_SELF_RETURNING = frozenset({"eval", "train", "float", "half", "double", "bfloat16", "requires_grad_"})


def _base(expr: cst.BaseExpression) -> cst.BaseExpression:
    while (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute)
           and expr.func.attr.value in _SELF_RETURNING | _MOVES | {"cpu"}):
        expr = expr.func.value
    return expr


def _to_cpu(ctx, call) -> bool:
    if call.method == "cpu":
        return True
    if call.method == "to" and len(call.node.args) == 1:
        text = ctx.code(call.node.args[0].value).strip("'\"")
        return text == "cpu" or text.endswith('device("cpu")') or text.endswith("device('cpu')")
    return False


def _already_on_device(ctx, scope, owner: str, before: int) -> bool:
    """``owner`` was moved to a device before the optimizer was built (``m = Net().to(device)``
    or ``m.to(device)``): a later move only brings it back after a trip to the CPU."""
    for call in scope.calls:
        if call.stmt.index >= before or call.method not in _MOVES or call.receiver is None:
            continue
        if call.method == "to" and not _looks_like_device(ctx, call.node):
            continue
        if dotted(_base(call.receiver)) == owner:
            return True
        node = call.stmt.node
        small = node.body[0] if isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1 else None
        if isinstance(small, cst.Assign) and small.value is call.node and any(
            dotted(t.target) == owner for t in small.targets
        ):
            return True
    return False


def _round_trip(ctx, scope, subject: str, after: int, before: int) -> bool:
    """``subject.cpu()`` (also ``subject.eval().cpu()``) between the optimizer and the move."""
    for call in scope.calls:
        if not (after < call.stmt.index < before) or call.receiver is None or not _to_cpu(ctx, call):
            continue
        if dotted(_base(call.receiver)) == subject:
            return True
    return False


def _looks_like_device(ctx, call: cst.Call) -> bool:
    """``.to(device)``, ``.to("cuda")``: not a pure dtype conversion ``.to(torch.float16)``."""
    if not call.args:
        return False
    for a in call.args:
        if a.keyword is not None:
            if a.keyword.value == "device":
                return True
            continue
        text = ctx.code(a.value)
        if "dtype" in text or "float" in text or "half" in text or "bfloat" in text:
            continue
        return True
    return False
