import libcst as cst

from torch_audit.findings import Applicability, Edit, Fix, Severity
from torch_audit.lint import fixes
from torch_audit.lint.facts.names import dotted
from torch_audit.lint.facts.tensors import MODULE, tensors
from torch_audit.rule import StaticRule

#: qualified names whose presence in an ``if`` test marks TorchScript/tracing/export code paths
_JIT_MARKERS = ("is_scripting", "is_tracing", "jit", "onnx", "is_exporting", "is_compiling")


class ForwardCalledDirectly(StaticRule):
    """## What it does
    Finds `model.forward(x)` calls on a module object, where `model(x)` is meant.

    ## Why is this bad?
    `nn.Module.__call__` runs the forward pre-hooks, the forward hooks and the backward hooks
    around `forward`. Calling `forward` directly skips all of them: weight normalisation and
    spectral normalisation (implemented as pre-hooks), pruning masks, quantisation observers,
    FSDP/DeepSpeed parameter gathering, `torch.utils.hooks`-based feature extraction and
    profilers all silently stop working for that call.

    ## Known problems
    Not reported, on purpose: `super().forward(...)` and `Base.forward(self, ...)` (a subclass
    extending its parent), a module calling its own `self.forward`, calls of a class attribute
    (`MyFunction.forward(ctx, ...)` of an `autograd.Function`), and calls under
    `torch.jit.is_scripting()`/`is_tracing()` branches or in functions decorated with
    `torch.jit.*`, where TorchScript and tracing sometimes need the direct call. A wrapper that
    deliberately calls `self.module.forward(...)` to avoid running the wrapped module's hooks twice
    is reported; suppress it there with a comment that says why.

    ## Fix safety
    The fix removes `.forward`, so that the module is called: `model.forward(x)` becomes
    `model(x)`. It is safe: the same `forward` runs, now with the module's hooks (and anything
    `__call__` adds, such as `torch.compile` and FSDP/DDP wrappers) as the author of those hooks
    intended.

    ## References
    - [torch.nn.Module.__call__ and hooks](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.register_forward_hook)
    - [PyTorch forums: model.forward(x) vs model(x)](https://discuss.pytorch.org/t/any-different-between-model-input-and-model-forward-input/3690)
    """

    code = "TA310"
    name = "forward-called-directly"
    severity = Severity.WARNING
    message = "`{obj}.forward(...)` bypasses nn.Module.__call__: the forward/backward hooks of {obj} do not run"
    fix_title = "Call the module itself: `{obj}(...)`"
    fixable = "always"

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value != "forward":
            return
        receiver = func.value
        if not isinstance(receiver, (cst.Name, cst.Attribute)):
            return  # super().forward(...), a fresh object, a subscript
        text = dotted(receiver)
        if text is None or self.ctx.qualname(receiver) is not None:
            return  # nn.Module.forward(self, x), nn.Linear.forward(self, x)
        if text.rsplit(".", 1)[-1][:1].isupper():
            return  # a class attribute: Base.forward(self, x), MyFunction.forward(ctx, x)
        if node.args and isinstance(node.args[0].value, cst.Name) and node.args[0].value.value in ("self", "ctx"):
            return  # an unbound call
        scope = self.ctx.scope
        stmt = self.ctx.statement
        if stmt is None or _in_jit_code(self.ctx):
            return
        if not self._is_module(receiver, scope, stmt.index):
            return
        self.report(func.attr, obj=text, fix=self._fix(func))

    def _fix(self, func: cst.Attribute) -> Fix | None:
        """`model.forward(x)` → `model(x)`: delete `.forward`."""
        if fixes.comments_in(func, keep=[func.value]):
            return None
        _, _, rl, rc = fixes.span(self.ctx, func.value, parens=True)
        _, _, al, ac = fixes.span(self.ctx, func.attr)
        return Fix("Call the module itself", Applicability.SAFE, (Edit(rl, rc, al, ac, ""),))

    def _is_module(self, receiver: cst.BaseExpression, scope, at: int) -> bool:
        method = _outer_method(scope)
        if method is not None and isinstance(receiver, cst.Name) and receiver.value == method.params[0]:
            return False  # a module calling its own forward (also from a nested function)
        facts = tensors(self.ctx)
        kind = facts.kind(receiver, scope, at)
        if kind is not None:
            return kind == MODULE
        if not isinstance(receiver, cst.Name):
            return False  # self.module.forward in a wrapper: the wrapped module came from outside
        a = self.ctx.dataflow.reaching(receiver.value, scope, at)
        if a is None or a.kind not in ("param", "assign", "for"):
            return False
        if a.kind == "param" and isinstance(a.target, cst.Param) and a.target.annotation is not None:
            return False  # annotated with something that is not a module
        # provenance unknown: the function also uses the object as a module (model.eval(), ...)
        return facts.used_as_module(receiver.value, scope)


def _outer_method(scope):
    """The method (function directly in a class) that contains ``scope``, if any."""
    s = scope
    while s is not None:
        if s.kind == "function" and s.class_scope is not None and s.params:
            return s
        s = s.parent
    return None


def _in_jit_code(ctx) -> bool:
    stmt = ctx.statement
    if stmt is not None:
        for branch in stmt.branches:
            test = getattr(branch, "test", None)
            if test is not None and any(m in ctx.code(test) for m in _JIT_MARKERS):
                return True
    s = ctx.scope
    while s is not None:
        if any(d.startswith(("torch.jit", "torch.onnx", "torch.export")) for d in s.decorators):
            return True
        s = s.parent
    return False
