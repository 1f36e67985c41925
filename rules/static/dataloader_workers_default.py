import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import argument
from torch_audit.rule import StaticRule


class DataloaderWorkersDefault(StaticRule):
    """## What it does
    Finds `DataLoader(...)` without `num_workers`.

    ## Why is this bad?
    With no workers the main process loads and collates every batch between training steps,
    so the accelerator waits for data; on image or audio pipelines this is often the largest
    cost of a step. `num_workers > 0` overlaps loading with compute.

    ## Known problems
    Opt-in: small in-memory datasets, tests, and notebooks on some platforms are right to use the
    default, and the right number depends on the machine. Not reported: an explicit
    `num_workers=0` (a choice), a `TensorDataset` (already in memory), test code (`test_*.py`,
    `tests/`, pytest `test*` functions). Arguments passed through `**kwargs` are assumed to set
    `num_workers`.

    ## References
    - [torch.utils.data: single- and multi-process data loading](https://pytorch.org/docs/stable/data.html#single-and-multi-process-data-loading)
    - [Performance tuning guide](https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html)
    """

    code = "TA630"
    name = "dataloader-workers-default"
    severity = Severity.INFO
    message = "DataLoader {how}: batches are loaded in the main process, between training steps"
    fix_title = "Pass num_workers > 0 (and persistent_workers=True, pin_memory=True on GPU)"
    opt_in = True

    def leave_Module(self, node: cst.Module) -> None:
        if _test_file(self.ctx.path):
            return
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.utils.data.DataLoader":
                continue
            if any(a.star for a in call.node.args):
                continue
            if argument(call.node, 5, "num_workers") is not None:
                continue  # any explicit value, 0 included, is a choice
            if call.scope.in_pytest_test:
                continue
            if self._in_memory(call):
                continue
            self.report(call.node, how="without num_workers")

    def _in_memory(self, call) -> bool:
        """The dataset is a ``TensorDataset``: already in memory, nothing to load in parallel."""
        arg = argument(call.node, 0, "dataset")
        if arg is None:
            return False
        value = arg.value
        if isinstance(value, cst.Call):
            return self.ctx.qualname(value.func, call.scope) in _IN_MEMORY
        if isinstance(value, (cst.Name, cst.Attribute)):
            src = self.ctx.dataflow.constructor_source(value, call.scope, call.stmt.index)
            return src is not None and src.qualname in _IN_MEMORY
        return False


_IN_MEMORY = frozenset({"torch.utils.data.TensorDataset", "torch.utils.data.dataset.TensorDataset"})


def _test_file(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    base = parts[-1]
    if base.startswith("test_") or base.endswith("_test.py") or base == "conftest.py":
        return True
    return any(p in ("tests", "test", "testing") for p in parts[:-1])
