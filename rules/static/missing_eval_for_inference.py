import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import related_locations
from torch_audit.rule import StaticRule


class MissingEvalForInference(StaticRule):
    """## What it does
    Finds a function that evaluates or predicts with a model (under `torch.no_grad()` or
    `torch.inference_mode()`, or named like `evaluate`, `validate`, `predict`, `infer`, `test`; or
    module-level code under `no_grad` after the last training step) when the model is known to
    have Dropout or BatchNorm-like layers (its class, its submodules, classes of other modules,
    and for a parameter the models its call sites pass) and neither the function, nor a caller
    anywhere in the project, puts it in eval mode.

    ## Why is this bad?
    In training mode, Dropout keeps zeroing activations at random and BatchNorm normalises with
    the statistics of the current batch and keeps updating its running averages. Validation
    scores come out noisy and too low, predictions depend on the batch they are in, and the
    running statistics drift with every evaluation. Nothing fails: the numbers are just wrong.

    ## Known problems
    A model whose content is not fully known (a getter's result, a third-party model, a
    parameter nobody in the project passes) is not reported: the rule reports what it knows.
    Methods of `nn.Module` subclasses, Lightning's `validation_step`/`test_step` and methods of
    classes built on other frameworks are skipped: the framework or the caller sets the mode.
    Any `.eval()` (or `.train(...)`) call in the function or its callers, an `eval()` on an
    object of the same name elsewhere in the file, and a context manager given the model
    (`with eval_mode(model):`) are taken as evidence that the author manages the mode.

    ## References
    - [torch.nn.Module.eval](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval)
    - [Autograd mechanics: evaluation mode is not no_grad](https://pytorch.org/docs/stable/notes/autograd.html#evaluation-mode-nn-module-eval)
    """

    code = "TA301"
    name = "missing-eval-for-inference"
    severity = Severity.ERROR
    message = "`{model}` runs inference in {function} {how} but is never put in eval mode: {layers}"
    fix_title = "Call `model.eval()` before evaluating (and `model.train()` before training again)"

    def leave_Module(self, node: cst.Module) -> None:
        inference = self.ctx.inference
        for fn in inference.functions:
            for use in fn.model_uses:
                if inference.mode_dependent(use) is not True:
                    continue  # no layer that behaves differently in eval mode, or not known
                if inference.evaluates_in_eval_mode(fn, use):
                    break
                how = "under no_grad" if fn.reason == "no_grad" else "(by its name)"
                where = "module-level code" if fn.scope.kind == "module" else f"`{fn.scope.name}()`"
                related = related_locations(use.ctor) if use.ctor is not None else ()
                self.report(use.call.node, model=use.subject, function=where, how=how, layers=_layers(use),
                            related=related)
                break  # one finding per function


def _layers(use) -> str:
    """What is known of the model: it has layers whose behaviour differs in eval mode."""
    from torch_audit.lint.api import dotted

    ctor = use.ctor
    name = None
    if ctor is not None:
        remote = getattr(ctor.remote, "name", None)
        node_name = dotted(ctor.node.func) if isinstance(ctor.node, cst.Call) else None
        name = remote or ctor.name or node_name or ctor.qualname
    text = "its Dropout/BatchNorm layers keep their training behaviour"
    if name:
        text = f"it is a `{name.rsplit('.', 1)[-1]}`, whose Dropout/BatchNorm layers keep their training behaviour"
    if ctor is not None and ctor.via is not None:
        from torch_audit.lint.api import describe_site

        text += f" (passed at {describe_site(ctor.via)})"
    return text
