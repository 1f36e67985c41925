import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import is_real_module
from torch_audit.rule import StaticRule


class ModuleMissingSuperInit(StaticRule):
    """## What it does
    Finds an `nn.Module` subclass whose `__init__` never calls the base class's `__init__`
    (`super().__init__()`, `super(Net, self).__init__()` or `nn.Module.__init__(self)`).

    ## Why is this bad?
    `nn.Module.__init__` creates the dictionaries that hold parameters, buffers, submodules and
    hooks. Without it, the first `self.fc = nn.Linear(...)` raises "cannot assign module before
    Module.__init__() call", and a module without submodules fails later, when it is called or
    moved, far from the cause.

    ## Known problems
    An `__init__` whose body is only a docstring, `...`, `pass` or a `raise` (a stub or an
    abstract class) is not reported, nor is one that calls another class's `__init__` in any
    form.

    ## References
    - [torch.nn.Module](https://pytorch.org/docs/stable/generated/torch.nn.Module.html)
    - [Python: super()](https://docs.python.org/3/library/functions.html#super)
    """

    code = "TA205"
    name = "module-missing-super-init"
    severity = Severity.ERROR
    message = "{cls}.__init__ never calls super().__init__(); {base} is left uninitialised"
    fix_title = "Call super().__init__() first in __init__"

    def leave_Module(self, node: cst.Module) -> None:
        for cls in self.ctx.modules.classes.values():
            init = cls.init
            if init is None or not is_real_module(self.ctx, cls):
                continue
            fn = init.node
            assert isinstance(fn, cst.FunctionDef)
            if _is_stub(fn):
                continue
            # in __init__, or in a helper method that __init__ may call
            if any(_calls_init(m.node) for m in cls.scope.functions().values()):
                continue
            base = next((self.ctx.code(b.value) for b in cls.node.bases if b.keyword is None), "nn.Module")
            self.report(fn.name, cls=cls.name, base=base)


def _is_stub(fn: cst.FunctionDef) -> bool:
    body = fn.body
    if not isinstance(body, cst.IndentedBlock):
        statements = [body]
    else:
        statements = list(body.body)
    for stmt in statements:
        if isinstance(stmt, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            for small in stmt.body:
                if isinstance(small, (cst.Pass, cst.Raise)):
                    continue
                if isinstance(small, cst.Expr) and isinstance(small.value, (cst.Ellipsis, cst.SimpleString, cst.ConcatenatedString)):
                    continue
                return False
        else:
            return False
    return True


def _calls_init(fn: cst.CSTNode) -> bool:
    """Whether the function calls some ``X.__init__(...)``."""
    stack: list[cst.CSTNode] = [fn]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "__init__":
            return True
        stack.extend(n.children)
    return False
