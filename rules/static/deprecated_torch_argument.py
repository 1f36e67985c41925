import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.facts.deprecations import (
    ARGUMENT,
    argument_entries,
    compat_guarded,
    ctx_target,
    load_table,
    migration_notes,
)
from torch_audit.rule import StaticRule

_ARGUMENT_NAMES = frozenset(e.argument for e in load_table().entries if e.argument)
_BOOL_POSITIONS = any(e.bool_position is not None for e in load_table().entries)


class DeprecatedTorchArgument(StaticRule):
    __doc__ = """## What it does
    Finds deprecated arguments passed to torch and torchvision callables: `size_average=` and
    `reduce=` on the losses, `pretrained=`/`pretrained_backbone=` on torchvision model builders
    (also `resnet50(True)`), `verbose=` on learning-rate schedulers. The list is the
    `kind = "argument"` part of the deprecation table (`torch_audit/data/deprecations.toml`):

    """ + migration_notes(ARGUMENT).replace("\n", "\n    ") + """

    ## Why is this bad?
    The old arguments still work but warn, and interact with their replacement in confusing
    ways: `size_average`/`reduce` silently override `reduction`, so `nn.MSELoss(reduction="sum",
    size_average=True)` averages. torchvision's `pretrained=True` picks the old weights, not the
    best ones.

    ## Known problems
    Arguments passed through `**kwargs` are not seen. An explicit `size_average=None` or
    `reduce=None` (the defaults) is not reported: it has no effect. `torch-version` filters
    torchvision entries through the torch release each torchvision release belongs to.

    ## References
    - [Loss functions: the reduction argument](https://pytorch.org/docs/stable/nn.html#loss-functions)
    - [torchvision multi-weight support API](https://pytorch.org/vision/stable/models.html)
    """

    code = "TA603"
    name = ARGUMENT
    severity = Severity.WARNING
    message = "{callee}({argument}=...) is {versions}; use {replacement} instead"
    fix_title = "Pass the replacement argument"

    def visit_Call(self, node: cst.Call) -> None:
        interesting = False
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value in _ARGUMENT_NAMES:
                interesting = True
                break
        if not interesting and not (_BOOL_POSITIONS and _bool_literal(node.args[0].value if node.args else None)):
            return
        qualname = self.ctx.qualname(node.func)
        entries = argument_entries(qualname)
        if not entries:
            return
        target = ctx_target(self.ctx)
        for entry in entries:
            status = entry.status(target)
            if status is None:
                continue
            arg = _find(node, entry.argument, entry.bool_position)
            if arg is None:
                continue
            if isinstance(arg.value, cst.Name) and arg.value.value == "None":
                continue  # the default: no effect, no warning
            if compat_guarded(self.ctx, self.ctx.stack):
                return
            shown = arg.keyword.value if arg.keyword is not None else entry.argument
            self.report(
                arg,
                callee=_short(qualname),
                argument=shown,
                versions=entry.versions(status),
                replacement=entry.replacement,
            )


def _bool_literal(expr) -> bool:
    return isinstance(expr, cst.Name) and expr.value in ("True", "False")


def _find(call: cst.Call, keyword: str, bool_position: int | None) -> cst.Arg | None:
    position = 0
    for arg in call.args:
        if arg.keyword is not None:
            if arg.keyword.value == keyword:
                return arg
            continue
        if arg.star:
            return None if bool_position is None else _find_keyword(call, keyword)
        if bool_position is not None and position == bool_position and _bool_literal(arg.value):
            return arg
        position += 1
    return None


def _find_keyword(call: cst.Call, keyword: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg
    return None


def _short(qualname: str | None) -> str:
    if qualname is None:
        return "?"
    for prefix, short in (("torch.nn.functional.", "F."), ("torch.nn.", "nn."), ("torch.optim.lr_scheduler.", "")):
        if qualname.startswith(prefix):
            return short + qualname[len(prefix):]
    return qualname
