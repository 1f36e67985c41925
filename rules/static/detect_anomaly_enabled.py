import os

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import bool_argument
from torch_audit.rule import StaticRule

_SET = frozenset({"torch.autograd.set_detect_anomaly", "torch.autograd.anomaly_mode.set_detect_anomaly"})
_CONTEXT = frozenset({"torch.autograd.detect_anomaly", "torch.autograd.anomaly_mode.detect_anomaly"})


class DetectAnomalyEnabled(StaticRule):
    """## What it does
    Finds `torch.autograd.set_detect_anomaly(True)` and `torch.autograd.detect_anomaly()`
    switched on unconditionally in code that is not a test.

    ## Why is this bad?
    Anomaly detection records a Python stack trace for every autograd node and checks every
    backward output for NaN: training runs 1.3x to 3x slower (more on small ops), and the
    memory use grows. It is a debugging tool that is easy to forget in training code.

    ## Known problems
    Not reported: a flag that is not the literal `True` (`set_detect_anomaly(args.debug)`), a
    call inside an `if` (a debug switch), and code in test functions or test files.

    ## References
    - [torch.autograd.detect_anomaly](https://pytorch.org/docs/stable/autograd.html#anomaly-detection)
    - [PyTorch performance tuning guide](https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html#disable-debugging-apis)
    """

    code = "TA314"
    name = "detect-anomaly-enabled"
    severity = Severity.WARNING
    message = "`{call}` enables autograd anomaly detection, which slows every backward pass (1.3x-3x)"
    fix_title = "Remove it, or enable it behind a debug flag"

    def visit_Call(self, node: cst.Call) -> None:
        q = self.ctx.qualname(node.func)
        if q in _SET:
            if bool_argument(node, 0, "mode") is not True:
                return
        elif q not in _CONTEXT:
            return
        stmt = self.ctx.statement
        if stmt is not None and stmt.branches:
            return
        if _in_tests(self.ctx):
            return
        name = q.rsplit(".", 1)[-1]
        self.report(node, call=f"torch.autograd.{name}({'True' if q in _SET else ''})")


def _in_tests(ctx) -> bool:
    base = os.path.basename(ctx.path)
    parts = ctx.path.replace("\\", "/").split("/")
    if base.startswith("test_") or base.endswith("_test.py") or base == "conftest.py":
        return True
    if any(p in ("tests", "test", "testing") for p in parts[:-1]):
        return True
    return ctx.scope is not None and ctx.scope.in_pytest_test
