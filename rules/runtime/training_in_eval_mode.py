from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class TrainingInEvalMode(RuntimeCheck):
    """## What it does
    Reports optimizer steps that update the parameters of a model whose Dropout or BatchNorm
    layers ran in eval mode during the training forward pass, while the model itself is in eval
    mode (`model.training` is False).

    ## Why is this bad?
    A validation helper called `model.eval()` and nothing switched back: Dropout no longer
    regularises and BatchNorm normalises with frozen running statistics, so training continues
    with a different model than intended. The loss still goes down; the result is just worse.

    ## Known problems
    Reported only when a parameter the optimizer updates belongs to a module in eval mode. A
    frozen backbone kept in eval mode on purpose is silent (its parameters are not updated), and
    so are `model.eval(); model.fc.train()` with only the head in the optimizer (fine-tuning with
    frozen BatchNorm statistics) and the common `model.train(); model.backbone.eval()` pattern
    (the model is in train mode). A model deliberately trained entirely in eval mode is
    reported.

    ## References
    - https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.train
    - https://pytorch.org/docs/stable/notes/autograd.html#locally-disabling-gradient-computation
    """

    code = "TA805"
    name = "training-in-eval-mode"
    severity = Severity.ERROR
    message = "{optimizer}.step() updates {root}, which is in eval mode: {layers} ran in eval mode during training"
    fix_title = "Call model.train() after validation, before the next training step"
    events = frozenset({"forward", "step_pre"})
    #: training in eval mode happens with gradients on: inference calls cost no call
    forward_grad = True

    def setup(self) -> None:
        from torch_audit.runtime.check_helpers import MODE_DEPENDENT_TYPES, mode_dependent

        self.forward_types = MODE_DEPENDENT_TYPES  # no call for the model's other modules
        self._mode_dependent = mode_dependent
        self._seen: dict[int, tuple] = {}

    def close(self) -> None:
        self._seen = {}

    def on_forward(self, module, args, output) -> None:
        # forward_grad: the session calls this with gradients on only
        if module.training or not self._mode_dependent(module):
            return
        root = self.session.root_of(module)
        if root is None or root.training:
            return
        entry = self._seen.get(id(root))
        if entry is None:
            self._seen[id(root)] = (root, [module])
        elif module not in entry[1]:
            entry[1].append(module)

    @staticmethod
    def _in_eval(owner) -> bool:
        return owner is not None and not owner.training

    def on_step_pre(self, ctx) -> None:
        seen, self._seen = self._seen, {}
        if not seen:
            return
        from torch_audit.runtime.check_helpers import names_list
        from torch_audit.runtime.check_helpers import optimizer_line

        updated = {id(p) for p, h in zip(ctx.params, ctx.has_grad) if h}
        index = self.session.index
        for root, layers in seen.values():
            # a parameter updated in a module that is itself in eval mode: a module the user
            # switched back to train() (the head being fine-tuned) is trained on purpose
            if not any(id(p) in updated and self._in_eval(index.owner(p))
                       for p in root.parameters()):
                continue
            names = [f"{index.name(m)} ({type(m).__name__})" for m in layers]
            self.report(index.name(root), step=ctx.step, module=root, optimizer=ctx.label,
                        **optimizer_line(self.session, ctx.label),
                        root=index.name(root), layers=names_list(names))
