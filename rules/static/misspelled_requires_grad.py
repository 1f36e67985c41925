import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint import fixes
from torch_audit.rule import StaticRule


class MisspelledRequiresGrad(StaticRule):
    """## What it does
    Finds assignments to an attribute called `require_grad` (`p.require_grad = False`), a
    misspelling of `requires_grad`.

    ## Why is this bad?
    Python lets any object grow a new attribute, so the assignment succeeds and does nothing:
    the parameters meant to be frozen keep training (and keep their optimizer state and
    gradient memory), or the tensor meant to need gradients does not get them. Nothing warns.

    ## Fix safety
    The fix renames the attribute to `requires_grad`. It is safe: the misspelled assignment
    has no effect at all, and the fix makes the code do what it says.

    ## References
    - [torch.Tensor.requires_grad](https://pytorch.org/docs/stable/generated/torch.Tensor.requires_grad.html)
    - [Locally disabling gradient computation](https://pytorch.org/docs/stable/notes/autograd.html#locally-disabling-gradient-computation)
    """

    code = "TA606"
    name = "misspelled-requires-grad"
    severity = Severity.ERROR
    message = "`{target}.require_grad = ...` sets a new attribute and does nothing; the flag is `requires_grad`"
    fix_title = "Spell it `requires_grad` (or call `.requires_grad_(flag)`)"
    fixable = "always"

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            self._check(target.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._check(node.target)

    def _check(self, target: cst.BaseExpression) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self._check(el.value)
            return
        if isinstance(target, cst.Attribute) and target.attr.value == "require_grad":
            fix = Fix(
                "Spell it `requires_grad`",
                Applicability.SAFE,
                (fixes.replace(self.ctx, target.attr, "requires_grad"),),
            )
            self.report(target, target=self.ctx.code(target.value), fix=fix)
