import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import Event
from torch_audit.rule import StaticRule


class BackwardUnderNoGrad(StaticRule):
    """## What it does
    Finds `backward()` called inside `torch.no_grad()` or `torch.inference_mode()` (a `with`
    block or a decorator, also around the call of a helper that calls `backward()`) on a loss
    that is computed there too, with gradients disabled.

    ## Why is this bad?
    A loss computed with gradients disabled has no graph: `backward()` fails with "element 0 of
    tensors does not require grad and does not have a grad_fn" (or, for a tensor that requires
    grad for another reason, computes gradients of nothing useful). Usually a training step was
    pasted into an evaluation block, or `no_grad` was meant to wrap only part of the code.

    ## Known problems
    A loss computed outside the `no_grad` block and only back-propagated inside it is not
    reported (autograd still works there). `torch.enable_grad()` inside the `no_grad` block
    switches gradients back on and is respected.

    ## References
    - [Locally disabling gradient computation](https://pytorch.org/docs/stable/notes/autograd.html#locally-disabling-gradient-computation)
    - [torch.no_grad](https://pytorch.org/docs/stable/generated/torch.no_grad.html)
    """

    code = "TA308"
    name = "backward-under-no-grad"
    severity = Severity.ERROR
    message = "{backward} runs under {context}, where its loss `{loss}` was computed with gradients disabled: there is no graph to differentiate"
    fix_title = "Compute the loss and call `backward()` outside `no_grad`/`inference_mode` (or inside `torch.enable_grad()`)"

    def leave_Module(self, node: cst.Module) -> None:
        ctx = self.ctx
        training = ctx.training
        for scope in ctx.module_scope.walk():
            if scope.kind == "class":
                continue
            if not any(ctx.grad_enabled(stmt) is False for stmt in scope.statements):
                continue  # both cases below need a statement of this scope under no_grad
            for e in training.function_events(scope):
                if e.kind != "backward" or e.target is None:
                    continue
                if e.via is None:
                    if ctx.grad_enabled(e.stmt) is not False:
                        continue
                    where = e.stmt
                else:
                    if e.via.scope is not scope or ctx.grad_enabled(e.stmt) is not None:
                        continue
                    if e.conditional or any(c.stmt.branches for c in e.chain[1:]):
                        continue  # `if training: loss.backward()` in a shared helper
                    if ctx.grad_enabled(e.via.stmt) is not False:
                        continue
                    where = e.via.stmt
                if not self._loss_without_graph(e):
                    continue
                self.report(
                    e.site_node,
                    backward=training.describe(e),
                    context=_context_name(ctx, where),
                    loss=_short(ctx.code(e.target)),
                )

    def _loss_without_graph(self, e: Event) -> bool:
        """Was the loss computed where gradients are disabled (the backward's own context)?"""
        ctx = self.ctx
        target = e.target
        scope = e.stmt.scope
        if e.via is not None:
            # inside a helper called under no_grad: a loss computed in the helper has no graph
            if isinstance(target, cst.Name):
                a = scope.reaching(target.value, e.stmt.index)
                if a is None or a.stmt is None or a.kind not in ("assign", "aug", "walrus", "unpack"):
                    return False
                # under the helper's own enable_grad() the loss has a graph
                return ctx.grad_enabled(a.stmt) is not True
            return isinstance(target, (cst.Call, cst.BinaryOperation, cst.UnaryOperation, cst.Subscript))
        if isinstance(target, cst.Name):
            a = scope.reaching(target.value, e.stmt.index)
            if a is None or a.stmt is None or a.kind not in ("assign", "aug", "walrus", "unpack"):
                return False
            return ctx.grad_enabled(a.stmt) is False
        # computed right there: model(x).sum().backward(), criterion(out, y).backward()
        return isinstance(target, (cst.Call, cst.BinaryOperation, cst.UnaryOperation, cst.Subscript))


def _context_name(ctx, stmt) -> str:
    for name, expr in reversed(stmt.withs):
        if name and ("no_grad" in name or "inference_mode" in name or "set_grad_enabled" in name):
            return f"`{ctx.code(expr)}`"
    s = stmt.scope
    while s is not None and s.kind in ("function", "lambda"):
        for dec in s.decorators:
            if dec and ("no_grad" in dec or "inference_mode" in dec):
                return f"`@{dec}` on {s.name}()"
        s = s.parent
    return "`torch.no_grad()`"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"
