from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class InferenceInTrainMode(RuntimeCheck):
    """## What it does
    Reports forward passes run under `torch.no_grad()` or `torch.inference_mode()` while the model
    is in train mode and has Dropout or BatchNorm layers in training mode.

    ## Why is this bad?
    Evaluation without `model.eval()`: Dropout randomly zeroes activations, so metrics are noisy
    and pessimistic, and BatchNorm normalises with the statistics of the evaluation batch and,
    worse, updates its running statistics with validation data. The numbers look plausible.

    ## Known problems
    Monte-Carlo dropout (model in eval mode, dropout layers switched back to train) is silent,
    and so is `torch.optim.swa_utils.update_bn` (a model whose BatchNorm layers have
    `momentum=None`). A `no_grad`
    block inside a training forward pass is silent: only forwards that start without gradients
    count, and not those whose inputs require gradients (reentrant activation checkpointing,
    `checkpoint(block, x, use_reentrant=True)`, runs the block so before recomputing it).

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval
    - https://pytorch.org/docs/stable/generated/torch.no_grad.html
    """

    code = "TA806"
    name = "inference-in-train-mode"
    severity = Severity.WARNING
    message = "forward of {root} without gradients while it is in train mode ({layer} is in training mode)"
    fix_title = "Call model.eval() before evaluating and model.train() afterwards"
    events = frozenset({"forward"})

    def setup(self) -> None:
        import torch

        from torch_audit.runtime.check_helpers import MODE_DEPENDENT_TYPES, is_batchnorm, mode_dependent

        self.forward_types = MODE_DEPENDENT_TYPES  # no call for the model's other modules
        self._torch = torch
        self._mode_dependent = mode_dependent
        self._is_bn = is_batchnorm
        self._last: tuple = ()

    def on_forward(self, module, args, output) -> None:
        if self.session.root_grad_enabled or not module.training:
            return
        if not self._mode_dependent(module):
            return
        if self._is_bn(module) and module.momentum is None:
            return  # swa_utils.update_bn and other cumulative statistics on purpose
        root = self.session.root_of(module)
        if root is None or not root.training:
            return
        if any(self._is_bn(m) and m.momentum is None for m in root.modules()):
            return  # update_bn: the whole model runs in train mode on purpose
        key = (id(root), self.session.step)
        if key == self._last:
            return
        self._last = key
        index = self.session.index
        self.report(index.name(root), module=root, root=index.name(root),
                    layer=f"{index.name(module)} ({type(module).__name__})")
