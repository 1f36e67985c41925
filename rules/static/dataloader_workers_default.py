import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.index import argument
from torch_audit.rule import StaticRule


class DataloaderWorkersDefault(StaticRule):
    """## What it does
    Finds `DataLoader(...)` without `num_workers`, or with `num_workers=0`.

    ## Why is this bad?
    With no workers the main process loads and collates every batch between training steps,
    so the accelerator waits for data; on image or audio pipelines this is often the largest
    cost of a step. `num_workers > 0` overlaps loading with compute.

    ## Known problems
    Opt-in: small in-memory datasets, tests, and notebooks on some platforms are right to use the
    default, and the right number depends on the machine. Arguments passed through `**kwargs`
    are assumed to set `num_workers`.

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
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.utils.data.DataLoader":
                continue
            if any(a.star for a in call.node.args):
                continue
            arg = argument(call.node, 5, "num_workers")
            if arg is None:
                self.report(call.node, how="without num_workers")
            elif isinstance(arg.value, cst.Integer) and arg.value.value == "0":
                self.report(call.node, how="with num_workers=0")
