import os

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule

_DATAPARALLEL = frozenset(
    {"torch.nn.DataParallel", "torch.nn.parallel.DataParallel", "torch.nn.parallel.data_parallel"}
)


class DataparallelInsteadOfDdp(StaticRule):
    """## What it does
    Finds `nn.DataParallel(model)` (and the functional `nn.parallel.data_parallel`).

    ## Why is this bad?
    `DataParallel` runs one Python process that scatters each batch, replicates the model on
    every step and gathers the outputs on the first GPU: the GIL, the per-step replication and
    the unbalanced memory of GPU 0 make it slower than `DistributedDataParallel` even on a single
    machine, and it does not work across machines. BatchNorm statistics are computed per replica
    and buffers updated in the replicas are lost. PyTorch's documentation recommends
    `DistributedDataParallel` instead.

    ## Known problems
    Preview: this is advice, not a correctness bug, and the code cannot show whether
    `DataParallel` was a deliberate choice. In the corpus review most findings were library
    fallbacks for interactive multi-GPU use, and one was the implementation of a user-selected
    "dp" strategy (Lightning), where the advice cannot be acted on.

    Not reported: a wrapper built only to load (or save) a `module.`-prefixed checkpoint
    (`DataParallel(m).load_state_dict(sd)`, or a wrapper whose only later uses are
    `load_state_dict`, `state_dict` and `.module`), and test code (`test_*.py`, `tests/`,
    pytest `test*` functions), which exercises DataParallel support on purpose.

    There is no automatic fix: moving to `DistributedDataParallel` means one process per GPU
    (`torchrun`), `init_process_group`, a `DistributedSampler`, and saving/logging from rank 0
    only, which no local edit can provide.

    ## References
    - [torch.nn.DataParallel](https://pytorch.org/docs/stable/generated/torch.nn.DataParallel.html)
    - [Use DistributedDataParallel instead of multiprocessing or nn.DataParallel](https://pytorch.org/docs/stable/notes/cuda.html#cuda-nn-ddp-instead)
    """

    code = "TA502"
    name = "dataparallel-instead-of-ddp"
    severity = Severity.WARNING
    status = "preview"
    message = "`{call}` is slower than DistributedDataParallel even on one machine and does not scale across machines"
    fix_title = "Use torch.nn.parallel.DistributedDataParallel (one process per GPU, e.g. via torchrun)"

    def visit_Call(self, node: cst.Call) -> None:
        q = self.ctx.qualname(node.func)
        if q not in _DATAPARALLEL:
            return
        if _in_tests(self.ctx):
            return  # tests of DataParallel support: DataParallel is what they exercise
        if self._only_for_loading(node):
            return
        self.report(node.func, call=self.ctx.code(node.func) + "(...)")

    def _only_for_loading(self, node: cst.Call) -> bool:
        """The wrapper only loads a ``module.``-prefixed state dict: ``DataParallel(m)
        .load_state_dict(sd)``, or ``w = DataParallel(m)`` whose every later use is
        ``w.load_state_dict(...)``, ``w.module`` or ``w.state_dict()``."""
        stack = self.ctx.stack
        parent = stack[-2] if len(stack) > 1 else None
        if isinstance(parent, cst.Attribute) and parent.value is node:
            return parent.attr.value in _LOADING
        assign = stack[-2] if len(stack) > 1 else None
        if not (isinstance(assign, cst.Assign) and assign.value is node and len(assign.targets) == 1):
            return False
        target = assign.targets[0].target
        if not isinstance(target, cst.Name):
            return False
        scope = self.ctx.scope
        body = scope.node if scope is not None and scope.node is not None else self.ctx.module
        uses = _name_uses(body, target.value, after=assign)
        return bool(uses) and all(u in _LOADING for u in uses) and "load_state_dict" in uses


#: what a wrapper built only to read or write a `module.`-prefixed checkpoint is used for
_LOADING = frozenset({"load_state_dict", "module", "state_dict"})


def _name_uses(body: cst.CSTNode, name: str, after: cst.CSTNode) -> list[str]:
    """For each load of ``name`` in ``body`` after the node ``after``: the attribute read on
    it (``w.module`` → ``module``), or ``""`` for any other use."""
    out: list[str] = []
    seen_after = False
    stack: list[tuple[cst.CSTNode, cst.CSTNode | None]] = [(body, None)]
    while stack:
        node, parent = stack.pop()
        if node is after:
            seen_after = True
            continue
        if isinstance(node, cst.Name) and node.value == name and seen_after:
            if isinstance(parent, cst.Attribute) and parent.value is node:
                out.append(parent.attr.value)
            elif not isinstance(parent, (cst.AssignTarget, cst.Attribute)):
                out.append("")
        stack.extend((child, node) for child in reversed(node.children))
    return out


def _in_tests(ctx) -> bool:
    base = os.path.basename(ctx.path)
    parts = ctx.path.replace("\\", "/").split("/")
    if base.startswith("test_") or base.endswith("_test.py") or base == "conftest.py":
        return True
    if any(p in ("tests", "test", "testing") for p in parts[:-1]):
        return True
    return ctx.scope is not None and ctx.scope.in_pytest_test
