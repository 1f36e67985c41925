import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import dotted, fixes
from torch_audit.rule import StaticRule

_RIGHT = "requires_grad"
_KNOWN_TYPOS = frozenset(
    {"requires_gradient", "require_gradient", "required_gradient", "requires_gradients",
     "require_gradients", "requiresgrad", "requiresGrad", "require_grads", "required_grads"}
)


class RequiresGradTypo(StaticRule):
    """## What it does
    Finds assignments to a misspelt `requires_grad` attribute: `p.require_grad = False`,
    `x.requires_gradient = True`, `layer.weight.required_grad = False`, and similar.

    ## Why is this bad?
    Tensors and modules accept arbitrary new attributes, so the misspelling raises no error: the
    assignment creates an unused attribute and the real `requires_grad` flag is unchanged. Layers
    meant to be frozen keep training (and keep their optimizer state); tensors meant to be
    differentiated get no gradient.

    ## Known problems
    An attribute with such a name that the file also reads (`if self.require_grad: ...`) is a
    user's own field and is not reported. Misspelt keyword arguments (`torch.zeros(3,
    require_grad=True)`) are not reported: PyTorch rejects them with a `TypeError` at once.

    ## Fix safety
    The fix renames the attribute to `requires_grad`. It is safe: the misspelt assignment has no
    effect at all, and the fix makes the code do what it says.

    ## References
    - [TorchFix TOR002](https://github.com/pytorch-labs/torchfix#tor002) (this rule also covers it)
    - [torch.Tensor.requires_grad](https://pytorch.org/docs/stable/generated/torch.Tensor.requires_grad.html)
    - [Excluding subgraphs from backward](https://pytorch.org/docs/stable/notes/autograd.html#setting-requires-grad)
    """

    code = "TA316"
    name = "requires-grad-typo"
    severity = Severity.ERROR
    message = "`{obj}.{attr}` is not `requires_grad`: the assignment creates a new attribute and changes nothing"
    fix_title = "Spell it `requires_grad`"
    fixable = "always"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._assigned: list[cst.Attribute] = []
        self._read: set[str] = set()

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._collect(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._collect(node.target)

    def _collect(self, target: cst.BaseExpression) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:  # `p.require_grad, n = False, 0`
                self._collect(element.value)
        elif isinstance(target, cst.Attribute) and _is_typo(target.attr.value):
            self._assigned.append(target)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        name = node.attr.value
        if not _is_typo(name):
            return
        if any(node is t for t in self._assigned):
            return  # the assignment itself, not a read
        self._read.add(name)

    def leave_Module(self, original_node: cst.Module) -> None:
        for target in self._assigned:
            attr = target.attr.value
            if attr in self._read:
                continue
            fix = Fix("Spell it `requires_grad`", Applicability.SAFE, (fixes.replace(self.ctx, target.attr, _RIGHT),))
            self.report(target.attr, obj=dotted(target.value) or self.ctx.code(target.value), attr=attr, fix=fix)


def _is_typo(name: str) -> bool:
    if name == _RIGHT:
        return False
    if name in _KNOWN_TYPOS:
        return True
    lowered = name.lower()
    if "grad" not in lowered or not lowered.startswith(("req", "rq", "rei", "rer")):
        return False
    return _distance(lowered, _RIGHT) <= 2


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
