import libcst as cst

from torch_audit.findings import Applicability, Edit, Fix, Severity
from torch_audit.lint.api import MODULE, dotted, fixes, tensors
from torch_audit.rule import StaticRule

#: Methods and functions that register a hook: calling a module from inside one of these hooks
#: runs the hooks again, so there `module.forward(...)` is the deliberate way to run it.
_HOOK_REGISTRARS = frozenset(
    f"register_{prefix}{kind}"
    for prefix in ("", "module_")
    for kind in (
        "forward_hook",
        "forward_pre_hook",
        "full_backward_hook",
        "full_backward_pre_hook",
        "backward_hook",
    )
)
#: A hook's parameters, by the names hooks are written with: (module, inputs[, output]).
_HOOK_MODULE_PARAMS = frozenset({"module", "mod", "m", "layer", "submodule", "sub", "model", "net", "self_module"})
#: (No `x`, `y`: `def evaluate(model, x, y)` runs a model and is reported.)
_HOOK_INPUT_PARAMS = frozenset({"input", "inputs", "inp", "inps", "args", "input_", "inputs_", "ins"})
_HOOK_OUTPUT_PARAMS = frozenset({"output", "outputs", "out", "outs", "output_", "result"})
#: The two-parameter form is a forward pre-hook only with these (``(model, inputs)`` is often an
#: ordinary function that runs a model, which is reported).
_PRE_HOOK_MODULE_PARAMS = frozenset({"module", "mod", "m", "layer", "submodule"})
_PRE_HOOK_INPUT_PARAMS = frozenset({"input", "inputs", "inp", "args", "input_", "inputs_"})

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
    extending its parent), a module calling its own `self.forward`, any call inside a hook (a
    function or lambda passed to `register_forward_hook`, `register_forward_pre_hook`, the
    backward and global `register_module_*` variants, also through `functools.partial`, or one
    with a hook's parameters: `(module, inputs[, output])`), where `module(...)` would run the
    hooks again and the hook would recurse forever; calls of a class attribute
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
        # Reported at the end of the file: the hooks it registers are known only then.
        self._pending = [*getattr(self, "_pending", []), (func, text, scope)]

    def leave_Module(self, node: cst.Module) -> None:
        pending = getattr(self, "_pending", [])
        if not pending:
            return
        names, lambdas = self._hooks()
        for func, text, scope in pending:
            if _in_hook(scope, names, lambdas):
                continue  # module(...) here would run this hook again: infinite recursion
            self.report(func.attr, obj=text, fix=self._fix(func))

    def _hooks(self) -> tuple[set[str], set[cst.CSTNode]]:
        """Names of the functions and methods this file registers as hooks, and lambdas
        registered as hooks."""
        names: set[str] = set()
        lambdas: set[cst.CSTNode] = set()
        for call in self.ctx.indexer.all_calls:
            if call.method not in _HOOK_REGISTRARS:
                continue
            arg = call.arg(0, "hook")
            value = arg.value if arg is not None else None
            while isinstance(value, cst.Call):  # functools.partial(hook, ...)
                inner = value.args[0] if value.args else None
                value = inner.value if inner is not None and inner.keyword is None and not inner.star else None
            if isinstance(value, cst.Name):
                names.add(value.value)
            elif isinstance(value, cst.Attribute):  # self._on_forward
                names.add(value.attr.value)
            elif isinstance(value, cst.Lambda):
                lambdas.add(value)
        return names, lambdas

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


def _in_hook(scope, names: set[str], lambdas: set[cst.CSTNode]) -> bool:
    """Inside a function or lambda registered as a hook, or written as one."""
    s = scope
    while s is not None:
        if s.kind == "lambda" and s.node in lambdas:
            return True
        if s.kind in ("function", "lambda") and (s.name in names or _hook_signature(s)):
            return True
        s = s.parent
    return False


def _hook_signature(scope) -> bool:
    """``(module, inputs, output)`` or ``(module, inputs)`` by the names hooks are written with,
    after ``self`` in a method."""
    params = list(scope.params)
    if scope.class_scope is not None and params[:1] == ["self"]:
        params = params[1:]
    if len(params) == 3:
        return (
            params[0] in _HOOK_MODULE_PARAMS
            and params[1] in _HOOK_INPUT_PARAMS
            and params[2] in _HOOK_OUTPUT_PARAMS
        )
    if len(params) == 2:
        return params[0] in _PRE_HOOK_MODULE_PARAMS and params[1] in _PRE_HOOK_INPUT_PARAMS
    return False


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
