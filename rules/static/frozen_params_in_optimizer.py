import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import ClassFreeze, construction_freezes, covers, freezes, optimizer_constructions
from torch_audit.rule import StaticRule


class FrozenParamsInOptimizer(StaticRule):
    """## What it does
    Finds an optimizer built from the unfiltered `model.parameters()` after some of the model's
    parameters were frozen: in the same function (`p.requires_grad = False`,
    `model.backbone.requires_grad_(False)`), or by the constructor of the model's class, in this
    file or in another module of the project (a fine-tuning wrapper that freezes its backbone in
    `__init__`).

    ## Why is this bad?
    The optimizer then owns the frozen parameters too. PyTorch's built-in optimizers skip a
    parameter whose `.grad` is `None`, so with default settings the frozen weights stay put, but
    the freeze is only as safe as that assumption: a gradient that exists as a zero tensor
    (`zero_grad(set_to_none=False)`, the default before PyTorch 2.0, gradients left over from
    earlier steps) lets momentum and weight decay move the "frozen" weights; optimizers from other
    libraries may update every parameter they hold; and the optimizer's parameter count, state
    and learning-rate groups no longer describe what is trained. Passing only the trainable
    parameters states the intent and removes the risk.

    ## Known problems
    Freezing must happen before the optimizer is built, in the same function or in the
    constructor of the model's class (helpers that freeze are not followed).
    Freezing *after* the optimizer is built (progressive freezing or unfreezing schedules) is not
    reported: it is a common deliberate pattern and harmless with `set_to_none=True`. An
    optimizer built from `filter(lambda p: p.requires_grad, ...)`, a comprehension, or parameter
    groups of the trainable sub-modules is correct and not reported.

    ## References
    - [PyTorch fine-tuning tutorial (only the new layer's parameters are optimized)](https://pytorch.org/tutorials/beginner/finetuning_torchvision_models_tutorial.html)
    - [torch.optim.Optimizer.zero_grad](https://pytorch.org/docs/stable/generated/torch.optim.Optimizer.zero_grad.html)
    """

    code = "TA401"
    name = "frozen-params-in-optimizer"
    severity = Severity.WARNING
    message = (
        "{optimizer} receives all of `{owner}.parameters()`, including the parameters of `{frozen}` "
        "frozen at line {line}"
    )
    fix_title = "Pass only trainable parameters: `(p for p in {owner}.parameters() if p.requires_grad)`"

    def leave_Module(self, node: cst.Module) -> None:
        by_scope: dict[int, list] = {}
        for opt in optimizer_constructions(self.ctx):
            scope = opt.call.scope
            if id(scope) not in by_scope:
                by_scope[id(scope)] = freezes(self.ctx, scope)
            events = [f for f in by_scope[id(scope)] if f.index < opt.call.stmt.index]
            for params in opt.params:
                state: dict[str, object] = {}
                # frozen by the constructor of the object's class (here or in another module)
                receiver = params.node.func.value  # type: ignore[union-attr]
                for cf in construction_freezes(self.ctx, receiver, scope, opt.call.stmt.index):
                    subject = params.owner + cf.suffix
                    if cf.value:
                        for k in list(state):
                            if covers(subject, k):
                                del state[k]
                    else:
                        state[subject] = cf
                for f in events:
                    if covers(params.owner, f.subject):
                        if f.value:
                            # unfreezing the subject (or a parent of earlier freezes) undoes them
                            for k in list(state):
                                if covers(f.subject, k):
                                    del state[k]
                        else:
                            state[f.subject] = f
                if state:
                    in_class = [(k, v) for k, v in state.items() if isinstance(v, ClassFreeze)]
                    if in_class:
                        subject, cf = in_class[0]
                        self.report(
                            params.node,
                            message=(
                                f"{opt.name} receives all of `{params.owner}.parameters()`, including the "
                                f"parameters of `{subject}` frozen by its constructor ({cf.where})"
                            ),
                            optimizer=opt.name,
                            owner=params.owner,
                            related=cf.related,
                        )
                        continue
                    first = min(state.values(), key=lambda f: f.index)
                    self.report(
                        params.node,
                        optimizer=opt.name,
                        owner=params.owner,
                        frozen=first.subject,
                        line=self.ctx.position(first.node).start.line,
                    )
