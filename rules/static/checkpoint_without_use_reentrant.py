import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import fixes
from torch_audit.rule import StaticRule

CHECKPOINT_FUNCTIONS = frozenset(
    {"torch.utils.checkpoint.checkpoint", "torch.utils.checkpoint.checkpoint_sequential"}
)


class CheckpointWithoutUseReentrant(StaticRule):
    """## What it does
    Finds calls of `torch.utils.checkpoint.checkpoint` and `checkpoint_sequential` that do not
    pass `use_reentrant` explicitly.

    ## Why is this bad?
    The default is changing from the old reentrant implementation (`use_reentrant=True`) to the
    non-reentrant one; torch warns on every call without the argument, and will raise in a
    future release. The two differ in behaviour: the reentrant variant does not support
    `torch.autograd.grad`, keyword arguments or inputs that do not require gradients (it then
    silently produces no gradients for the checkpointed parameters), and it ignores nested
    structures. `use_reentrant=False` is recommended.

    ## Known problems
    Arguments passed through `**kwargs` are assumed to contain `use_reentrant`.

    ## Fix safety
    The fix passes `use_reentrant=False`, the variant PyTorch recommends. It is unsafe: the
    non-reentrant variant behaves differently in corner cases (it supports inputs that do not
    require grad and `torch.autograd.grad`, but records and replays RNG state and hooks
    differently), so the gradients of unusual code may change.

    ## References
    - [torch.utils.checkpoint](https://pytorch.org/docs/stable/checkpoint.html)
    - [BC-breaking update to torch.utils.checkpoint](https://dev-discuss.pytorch.org/t/bc-breaking-update-to-torch-utils-checkpoint-not-passing-in-use-reentrant-flag-will-raise-an-error/1745)
    """

    code = "TA613"
    name = "checkpoint-without-use-reentrant"
    severity = Severity.WARNING
    message = "{callee}() without an explicit use_reentrant; pass use_reentrant=False (recommended) or True to keep the old behaviour"
    fix_title = "Pass use_reentrant=False"
    fixable = "always"

    def leave_Module(self, node: cst.Module) -> None:
        for call in self.ctx.indexer.all_calls:
            if call.qualname not in CHECKPOINT_FUNCTIONS:
                continue
            args = call.node.args
            if any(a.star == "**" for a in args):
                continue
            if any(a.keyword is not None and a.keyword.value == "use_reentrant" for a in args):
                continue
            edit = fixes.add_keyword(self.ctx, call.node, "use_reentrant", "False")
            fix = Fix("Pass use_reentrant=False", Applicability.UNSAFE, (edit,)) if edit else None
            self.report(call.node, callee=call.qualname.rsplit(".", 1)[1], fix=fix)
