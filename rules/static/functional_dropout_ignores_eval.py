import re

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import argument, is_real_module
from torch_audit.rule import StaticRule

#: functional dropouts whose ``training`` parameter defaults to True, with its position
DROPOUTS = {
    "torch.nn.functional.dropout": 2,
    "torch.nn.functional.dropout1d": 2,
    "torch.nn.functional.dropout2d": 2,
    "torch.nn.functional.dropout3d": 2,
    "torch.nn.functional.alpha_dropout": 2,
    "torch.nn.functional.feature_alpha_dropout": 2,
}


class FunctionalDropoutIgnoresEval(StaticRule):
    """## What it does
    Finds `F.dropout(x)` (and `dropout1d/2d/3d`, `alpha_dropout`, `feature_alpha_dropout`)
    called in a method of an `nn.Module` without a `training` argument.

    ## Why is this bad?
    Unlike `nn.Dropout`, the functional form does not know the module's mode: its `training`
    parameter defaults to `True`. After `model.eval()` it still zeroes activations and rescales
    the rest, so evaluation and inference are noisy and worse than they should be, and results
    differ from run to run.

    ## Known problems
    Monte Carlo dropout keeps dropout on at inference on purpose; say so with
    `training=True`, which is not reported. Also not reported: a probability that is literally
    `0`; a call under an `if` that tests a switch of its own (`if dropout_switch:`,
    `if self.mc_dropout:`, `if training:`); and dropout that is on at inference by design and
    said so (a Tacotron-style `Prenet`, or a class whose docstring or comments say its dropout
    is always applied, even in evaluation).

    ## References
    - [torch.nn.functional.dropout](https://pytorch.org/docs/stable/generated/torch.nn.functional.dropout.html)
    - [torch.nn.Dropout](https://pytorch.org/docs/stable/generated/torch.nn.Dropout.html)
    """

    code = "TA204"
    name = "functional-dropout-ignores-eval"
    severity = Severity.ERROR
    message = "{func}() in {where} has no training= argument: it stays active after eval()"
    fix_title = "Pass training=self.training, or use an nn.Dropout submodule"

    def leave_Module(self, node: cst.Module) -> None:
        for call in self.ctx.indexer.all_calls:
            q = call.qualname
            if q not in DROPOUTS:
                continue
            args = call.node.args
            if any(a.star for a in args):
                continue
            if argument(call.node, DROPOUTS[q], "training") is not None:
                continue
            p = argument(call.node, 1, "p")
            if p is not None and _is_zero(p.value):
                continue
            cls = self.ctx.modules.enclosing_class(call.scope)
            if cls is None or not is_real_module(self.ctx, cls):
                continue
            method = call.scope
            while method.kind == "lambda" or (method.parent is not None and method.parent.kind == "function"):
                method = method.parent
            if method.kind != "function" or method.class_scope is not cls.scope:
                continue
            if _is_static(method):
                continue
            if self._switched(call) or self._always_on(cls):
                continue
            self.report(call.node, func=self.ctx.code(call.node.func), where=f"{cls.name}.{method.name}")


    def _switched(self, call) -> bool:
        """Under an ``if`` that tests a switch (``if dropout_switch:``, ``if self.mc_dropout:``,
        ``if training:``): the code decides when dropout runs, by its own flag."""
        for branch in call.stmt.branches:
            test = getattr(branch, "test", None)
            if test is not None and _SWITCH.search(self.ctx.code(test)):
                return True
        return False

    def _always_on(self, cls) -> bool:
        """Dropout that is on at inference by design, and said so: a Tacotron-style ``Prenet``,
        or a class whose text states that its dropout is always applied."""
        if "prenet" in cls.name.lower():
            return True
        return bool(_ALWAYS_ON.search(self.ctx.code(cls.node)))


#: a test that switches dropout on or off at run time
_SWITCH = re.compile(r"switch|training|\btrain\b|mc_|monte|uncertain|stochastic|determinis|sample", re.I)
#: a statement that the dropout is deliberately always active
_ALWAYS_ON = re.compile(
    r"alway?s\s+(appl\w*\s+)?dropout|dropout\s+(is\s+)?(always|even\s+(in|during|at)\s+(eval|inference|test))"
    r"|(appl\w*|keep\w*|use\w*)\s+dropout\s+(even\s+)?(in|during|at)\s+(eval|inference|test)"
    r"|even\s+in\s+evaluation",
    re.I,
)


def _is_zero(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.Integer):
        return int(expr.value, 0) == 0
    if isinstance(expr, cst.Float):
        return float(expr.value) == 0.0
    return False


def _is_static(method) -> bool:
    return any(d.rsplit(".", 1)[-1] in ("staticmethod", "classmethod") for d in method.decorators)
