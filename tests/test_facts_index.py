"""The indexer's records are usable during the walk, not only after it."""

import libcst as cst

from torch_audit.lint.context import FileContext
from torch_audit.lint.traverse import dispatch_table, walk


class _Probe:
    def __init__(self, ctx):
        self.ctx = ctx
        self.seen = []

    def visit_Call(self, node):
        self.seen.append(self.ctx.call(node))

    def leave_Module(self, node):
        self.after = [self.ctx.call(c.node) for c in self.ctx.indexer.all_calls]


def test_call_lookup_during_and_after_the_walk():
    src = "import torch.nn.functional as F\nx = F.softmax(y)\nz = F.relu(x)\nw = g(z)\n"
    module = cst.parse_module(src)
    ctx = FileContext("t.py", src, module)
    probe = _Probe(ctx)
    visit = dispatch_table([ctx.indexer], "visit_")
    for t, hs in dispatch_table([probe], "visit_").items():
        visit.setdefault(t, []).extend(hs)
    leave = dispatch_table([probe], "leave_")
    for t, hs in dispatch_table([ctx.indexer], "leave_").items():
        leave.setdefault(t, []).extend(hs)
    walk(module, [visit, leave], ctx.stack)
    assert [c.qualname for c in probe.seen] == ["torch.nn.functional.softmax", "torch.nn.functional.relu", None]
    assert all(c is not None for c in probe.after) and len(probe.after) == 3


def test_canonical_names_of_torch_nn_modules_exist():
    """torch.nn re-exports every public layer class of torch.nn.modules.*; private names and
    helpers keep the path they have (torch.nn._Loss and torch.nn.utils._pair do not exist)."""
    from torch_audit.lint.facts.names import canonical

    assert canonical("torch.nn.modules.loss.CrossEntropyLoss") == "torch.nn.CrossEntropyLoss"
    assert canonical("torch.nn.modules.Linear") == "torch.nn.Linear"
    assert canonical("torch.nn.modules.pooling.MaxPool2d") == "torch.nn.MaxPool2d"
    assert canonical("torch.nn.modules.utils._pair") == "torch.nn.modules.utils._pair"
    assert canonical("torch.nn.modules.loss._Loss") == "torch.nn.modules.loss._Loss"
    assert canonical("torch.nn.modules.batchnorm") == "torch.nn.modules.batchnorm"
