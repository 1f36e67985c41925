import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import INFERENCE_NAME, Scope, Statement, dotted
from torch_audit.rule import StaticRule

#: framework hooks where the framework disables gradients itself
_FRAMEWORK_HOOKS = frozenset(
    {"validation_step", "test_step", "predict_step", "on_validation_epoch_end", "on_test_epoch_end",
     "on_validation_batch_end", "on_test_batch_end", "on_predict_batch_end"}
)
_GRADIENT_FUNCTIONS = ("torch.autograd.grad", "torch.autograd.functional.", "torch.func.", "functorch.")


class MissingNoGradForInference(StaticRule):
    """## What it does
    Finds a model that is put in eval mode (`model.eval()`, directly or through a helper) and
    then run, in a loop or in a function named like evaluation (`evaluate`, `validate`,
    `predict`, `infer`, ...), outside `torch.no_grad()`/`torch.inference_mode()`, while nothing
    in that stretch of code needs gradients: no `backward()`, no `torch.autograd.grad`, no
    `requires_grad_()`, and no caller in the file that wraps the function in `no_grad`.

    ## Why is this bad?
    `eval()` changes how Dropout and BatchNorm behave; it does not turn off autograd. Every
    forward pass still records the graph and keeps the activations it needs for a backward
    pass that never comes: evaluation uses several times the memory it needs (often the cause of
    out-of-memory errors at validation time) and runs slower.

    ## Known problems
    Callers in other modules are not consulted: a function that is always called under `no_grad`
    from another module is reported (wrapping it in `@torch.no_grad()` is harmless). Code that needs input gradients
    (saliency maps, adversarial attacks, gradient penalties), methods of `nn.Module` subclasses (a
    `forward` that runs a BatchNorm in eval mode runs in training too), Lightning's
    `validation_step`/`test_step`/`predict_step` and pytest `test_*` functions are skipped, as is
    a model put in eval mode only to freeze BatchNorm while training.

    ## References
    - [Autograd mechanics: evaluation mode is not no_grad](https://pytorch.org/docs/stable/notes/autograd.html#evaluation-mode-nn-module-eval)
    - [torch.inference_mode](https://pytorch.org/docs/stable/generated/torch.inference_mode.html)
    """

    code = "TA302"
    name = "missing-no-grad-for-inference"
    severity = Severity.WARNING
    message = (
        "`{model}` runs in {function} after {eval} with autograd still on and nothing here needs "
        "gradients: every forward pass keeps its activations for a backward that never comes"
    )
    fix_title = "Wrap the evaluation in `with torch.no_grad():` (or `torch.inference_mode()`), or decorate the function"

    def leave_Module(self, node: cst.Module) -> None:
        ctx = self.ctx
        training = ctx.training
        for scope in ctx.module_scope.walk():
            if scope.kind not in ("function", "module") or not self._eligible(scope):
                continue
            events = training.function_events(scope, depth=2)
            for i, e in enumerate(events):
                subject = e.caller_subject
                if e.kind != "eval" or not subject:
                    continue
                end = None
                trained = False
                for later in events[i + 1 :]:
                    if later.kind in ("backward", "step"):
                        trained = True  # eval() to freeze BatchNorm while training
                        break
                    if later.kind == "train" and (later.caller_subject is None or _related(later.caller_subject, subject)):
                        end = later.index
                        break
                if trained:
                    continue
                call = self._model_call(scope, subject, e.index, end)
                if call is None:
                    continue
                self.report(
                    call.node,
                    model=subject,
                    function="module-level code" if scope.kind == "module" else f"{scope.name}()",
                    eval=training.describe(e),
                )
                break

    def _eligible(self, scope: Scope) -> bool:
        if scope.kind == "function" and (scope.name.startswith("test_") or scope.name in _FRAMEWORK_HOOKS):
            return False
        if scope.kind == "function" and self.ctx.modules.enclosing_class(scope) is not None:
            # a method of an nn.Module (its forward freezing a BatchNorm with .eval()): it runs
            # inside the model's own computation, in training too; the caller decides grad mode
            return False
        for dec in scope.decorators:
            if dec and ("grad" in dec or "inference" in dec):
                return False
        for call in scope.calls:
            q = call.qualname or ""
            if q.startswith(_GRADIENT_FUNCTIONS) or call.method in ("requires_grad_", "retain_grad", "enable_grad"):
                return False
            if call.method == "set_grad_enabled" and not isinstance(call.stmt.node, cst.With):
                return False
        for stmt in scope.statements:
            node = stmt.node
            if isinstance(node, cst.SimpleStatementLine):
                for small in node.body:
                    if isinstance(small, cst.Assign) and any(
                        isinstance(t.target, cst.Attribute) and t.target.attr.value == "requires_grad"
                        for t in small.targets
                    ):
                        return False
        if scope.kind == "function":
            for caller in self.ctx.training.callers(scope):
                if self.ctx.grad_enabled(caller.stmt) is not None or _unknown_context(caller.stmt):
                    return False
        return True

    def _model_call(self, scope: Scope, subject: str, start: int, end: int | None):
        inference_name = scope.kind == "function" and bool(INFERENCE_NAME.search(scope.name))
        for call in scope.calls:
            index = call.stmt.index
            if index <= start or (end is not None and index >= end):
                continue
            func = dotted(call.node.func)
            if func not in (subject, subject + ".forward"):
                continue
            if self.ctx.grad_enabled(call.stmt) is not None or _unknown_context(call.stmt):
                continue
            if not (call.stmt.loops or inference_name):
                continue
            return call
        return None


def _unknown_context(stmt: Statement) -> bool:
    """A ``with`` whose effect on gradients the code does not show (``with ctx:``, a
    conditional context, a custom ``maybe_no_grad()``)."""
    for name, expr in stmt.withs:
        if name is None or isinstance(expr, cst.Name):
            return True
        low = name.lower()
        if "grad" in low or "inference" in low or "eval" in low:
            return True
    return False


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")
