import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import ctx_target, fixes, untrusted_source
from torch_audit.rule import StaticRule

#: torch.load's default became weights_only=True in this release
SAFE_DEFAULT = (2, 6, 0)


class TorchLoadWithoutWeightsOnly(StaticRule):
    """## What it does
    Finds `torch.load` calls that do not pass `weights_only` explicitly.

    ## Why is this bad?
    Before torch 2.6, `torch.load` unpickled arbitrary objects by default, so loading a crafted
    file runs arbitrary code. From 2.6 the default is `weights_only=True`, and the same call
    fails on checkpoints that hold anything but tensors and plain containers. Either way the
    behaviour depends on the installed torch; saying `weights_only=True` (or, for a trusted
    file that needs full pickling, `weights_only=False`) makes it explicit and safe everywhere.

    ## Known problems
    With `torch-version` set to 2.6 or later the call is safe by default and not reported.
    Arguments passed through `**kwargs` are assumed to contain `weights_only`. When
    `torch-version` is below 2.6 and the path comes from outside the program, the stronger
    `torch-load-of-untrusted-pickle` is reported instead.

    ## Fix safety
    The fix passes `weights_only=True`. It is unsafe: a checkpoint that holds more than tensors
    and plain containers (a whole pickled model, an optimizer with custom classes, numpy
    objects) no longer loads. Not offered when a `pickle_module` is given (torch refuses it
    together with `weights_only=True`).

    ## References
    - [torch.load](https://pytorch.org/docs/stable/generated/torch.load.html)
    - [Weights-only unpickler](https://pytorch.org/docs/stable/notes/serialization.html#weights-only)
    """

    code = "TA610"
    name = "torch-load-without-weights-only"
    severity = Severity.WARNING
    message = "torch.load without weights_only: before torch 2.6 it unpickles arbitrary code, from 2.6 it rejects non-tensor objects"
    fix_title = "Pass weights_only=True (weights_only=False only for trusted files)"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        target = ctx_target(self.ctx)
        if target is not None and target >= SAFE_DEFAULT:
            return
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.load":
                continue
            args = call.node.args
            if any(a.star == "**" for a in args):
                continue
            if any(a.keyword is not None and a.keyword.value == "weights_only" for a in args):
                continue
            if target is not None:
                f = call.arg(0, "f")
                if f is not None and untrusted_source(self.ctx, f.value, call.scope, call.stmt.index):
                    continue  # torch-load-of-untrusted-pickle
            self.report(call.node, fix=_fix(self.ctx, call.node))


def _fix(ctx, node: cst.Call) -> Fix | None:
    args = node.args
    if any(a.keyword is not None and a.keyword.value == "pickle_module" for a in args):
        return None
    if sum(1 for a in args if a.keyword is None) > 2 or any(a.star == "*" for a in args):
        return None  # pickle_module passed by position (or cannot tell)
    edit = fixes.add_keyword(ctx, node, "weights_only", "True")
    return Fix("Pass weights_only=True", Applicability.UNSAFE, (edit,)) if edit else None
