import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import BATCH_NORMS, Call, Scope, is_real_module, self_attribute
from torch_audit.rule import StaticRule


class NormLayerReused(StaticRule):
    """## What it does
    Finds one BatchNorm instance (`self.bn = nn.BatchNorm2d(...)`) applied twice in the same
    `forward`, the second time to features computed from the output of the first.

    ## Why is this bad?
    A BatchNorm layer keeps one set of running statistics and one affine transform for the
    features it normalises. Applied at two depths of the network, it averages the statistics of
    two different distributions: training uses per-batch statistics and looks fine, but after
    `eval()` both places are normalised with a mixture that fits neither, and accuracy drops.

    ## Known problems
    Applying the same BatchNorm to two independent inputs (a Siamese network sharing all its
    layers) is a deliberate weight sharing and is not reported; neither is a call repeated by a
    loop or one in mutually exclusive branches.

    ## References
    - [torch.nn.BatchNorm2d](https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html)
    - [Ioffe & Szegedy, Batch Normalization (2015)](https://arxiv.org/abs/1502.03167)
    """

    code = "TA202"
    name = "norm-layer-reused"
    severity = Severity.WARNING
    message = (
        "self.{attr} ({layer}) is applied again in {cls}.forward to the result of its first "
        "application (line {first}); one set of running statistics mixes two feature distributions"
    )
    fix_title = "Create a separate BatchNorm layer for each place it is applied"

    def leave_Module(self, node: cst.Module) -> None:
        for cls in self.ctx.modules.classes.values():
            fwd = cls.forward
            if fwd is None or not is_real_module(self.ctx, cls):
                continue
            norms = {attr: q for attr, q in _batch_norm_attributes(cls.scope).items()}
            if not norms:
                continue
            uses: dict[str, list[Call]] = {}
            for call in fwd.calls:
                attr = self_attribute(call.node.func, fwd)
                if attr in norms:
                    uses.setdefault(attr, []).append(call)
            for attr, calls in uses.items():
                if len(calls) < 2:
                    continue
                nodes = {id(c.node): c for c in calls}
                for later in calls[1:]:
                    first = _earlier_application(self.ctx, later, nodes, fwd)
                    if first is not None:
                        layer = "nn." + norms[attr].rsplit(".", 1)[-1]
                        self.report(
                            later.node,
                            attr=attr,
                            layer=layer,
                            cls=cls.name,
                            first=self.ctx.position(first.node).start.line,
                        )
                        break


def _batch_norm_attributes(cls_scope: Scope) -> dict[str, str]:
    """Attributes whose every assignment in the class builds a BatchNorm."""
    out = {}
    for attr, defs in cls_scope.attributes.items():
        quals = set()
        for a in defs:
            if a.kind != "assign" or not isinstance(a.value, cst.Call) or a.stmt is None:
                quals = set()
                break
            quals.add(a.stmt.scope.qualname(a.value.func))
        if len(quals) == 1:
            (q,) = quals
            if q in BATCH_NORMS:
                out[attr] = q
    return out


def _earlier_application(ctx, later: Call, uses: dict[int, Call], fwd: Scope) -> Call | None:
    """An application of the same layer whose result flows into ``later``'s input, on a path
    that always runs before it (not in a branch that excludes it)."""
    found: list[Call] = []
    seen: set = set()

    def visit_expr(expr: cst.CSTNode, at: int, depth: int) -> None:
        if depth > 20 or found:
            return
        for sub in _walk(expr):
            if isinstance(sub, cst.Call) and id(sub) in uses and sub is not later.node:
                found.append(uses[id(sub)])
                return
            if isinstance(sub, cst.Name):
                key = (sub.value, at)
                if key in seen:
                    continue
                seen.add(key)
                a = fwd.reaching(sub.value, at)
                if a is None or a.value is None or a.stmt is None or a.stmt.scope is not fwd:
                    continue
                visit_expr(a.value, a.index, depth + 1)
                if found:
                    return

    for arg in later.node.args:
        visit_expr(arg.value, later.stmt.index, 0)
    for first in found:
        if first.stmt.index > later.stmt.index:
            return None
        b1, b2 = first.stmt.branches, later.stmt.branches
        l1, l2 = first.stmt.loops, later.stmt.loops
        if b1 == b2[: len(b1)] and l1 == l2[: len(l1)]:
            return first
    return None


def _walk(node: cst.CSTNode):
    """Every node of an expression, outermost first."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(list(n.children)))
