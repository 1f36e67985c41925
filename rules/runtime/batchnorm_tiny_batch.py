from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class BatchNormTinyBatch(RuntimeCheck):
    """## What it does
    Reports BatchNorm layers that normalise training batches smaller than `min_batch` samples
    (across ranks for `SyncBatchNorm`).

    ## Why is this bad?
    BatchNorm estimates mean and variance from the batch. With a handful of samples the estimate
    is noise: training becomes unstable, the running statistics used at evaluation time are
    wrong, and with one sample per channel the variance is zero.

    ## Known problems
    A short last batch of an epoch (`drop_last=False`) is reported too; it is counted, so a
    count of one per epoch points at that.

    ## References
    - https://arxiv.org/abs/1803.08494
    - https://pytorch.org/docs/stable/generated/torch.nn.SyncBatchNorm.html
    """

    code = "TA712"
    name = "batchnorm-tiny-batch"
    severity = Severity.WARNING
    status = "preview"
    message = "{module} ({cls}) normalises training batches of {batch} sample(s) (min_batch={min_batch})"
    fix_title = "Use a larger batch, GroupNorm/LayerNorm, or SyncBatchNorm across GPUs"
    events = frozenset({"forward"})
    options = {
        "min_batch": Option(4, "smallest batch size BatchNorm should see in training", int),
    }

    def setup(self) -> None:
        import torch

        from torch_audit.runtime.check_helpers import BATCHNORM_TYPES
        from torch_audit.runtime.check_helpers import dist
        from torch_audit.runtime.check_helpers import is_batchnorm

        self.forward_types = BATCHNORM_TYPES  # no call for the model's other modules
        self._torch = torch
        self._is_bn = is_batchnorm
        self._world = dist.world_size()

    def on_forward(self, module, args, output) -> None:
        if not module.training or not self._is_bn(module):
            return
        torch = self._torch
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        batch = output.shape[0]
        if isinstance(module, torch.nn.SyncBatchNorm):
            batch *= self._world
        if batch < self.opts["min_batch"]:
            name = self.session.index.name(module)
            self.report(name, module=module, message=self.message.format(
                module=name, cls=type(module).__name__, batch=batch,
                min_batch=self.opts["min_batch"]))
