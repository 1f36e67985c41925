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
        self.report(node.func, call=self.ctx.code(node.func) + "(...)")
