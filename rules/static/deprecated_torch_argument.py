import functools

import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import (
    ARGUMENT,
    argument_entries,
    compat_guarded,
    ctx_target,
    fixes,
    load_table,
    with_migration_notes,
)
from torch_audit.rule import StaticRule


@functools.lru_cache(maxsize=1)
def _argument_filter() -> tuple[frozenset[str], bool]:
    """The argument names the table lists, and whether an entry is a positional bool (computed
    on first use: the table is not loaded at import)."""
    entries = load_table().entries
    return frozenset(e.argument for e in entries if e.argument), any(e.bool_position is not None for e in entries)


class DeprecatedTorchArgument(StaticRule):
    """## What it does
    Finds deprecated arguments passed to torch and torchvision callables: `size_average=` and
    `reduce=` on the losses, `pretrained=`/`pretrained_backbone=` on torchvision model builders
    (also `resnet50(True)`), `verbose=` on learning-rate schedulers. The list is the
    `kind = "argument"` part of the deprecation table (`torch_audit/data/deprecations.toml`):

    {migration notes}

    ## Why is this bad?
    The old arguments still work but warn, and interact with their replacement in confusing
    ways: `size_average`/`reduce` silently override `reduction`, so `nn.MSELoss(reduction="sum",
    size_average=True)` averages. torchvision's `pretrained=True` picks the old weights, not the
    best ones.

    ## Known problems
    Arguments passed through `**kwargs` are not seen. An explicit `size_average=None` or
    `reduce=None` (the defaults) is not reported: it has no effect. `torch-version` filters
    torchvision entries through the torch release each torchvision release belongs to.

    ## Fix safety
    `pretrained=False` becomes `weights=None` and `pretrained_backbone=False` becomes
    `weights_backbone=None`. `pretrained=True` on a classification builder becomes
    `weights="IMAGENET1K_V1"` and `pretrained_backbone=True` becomes
    `weights_backbone="IMAGENET1K_V1"`: exactly the weights the legacy flag loads (not
    `"DEFAULT"`, which is often a newer, different set of weights). The message recommends the
    same value as the fix, so advice and rewrite load the same weights; where no fix is offered
    for `pretrained=True` the message asks for the builder's legacy weights by name rather than
    `DEFAULT`. These fixes are safe. Not
    fixed: `pretrained=True` on detection, segmentation, video, optical-flow and quantized
    builders (their legacy weights differ per model), a positional `resnet50(True)`, a call that
    already passes the new argument, and `size_average`/`reduce`/`verbose`.

    ## References
    - [Loss functions: the reduction argument](https://pytorch.org/docs/stable/nn.html#loss-functions)
    - [torchvision multi-weight support API](https://pytorch.org/vision/stable/models.html)
    """

    code = "TA603"
    name = ARGUMENT
    severity = Severity.WARNING
    message = "{callee}({argument}=...) is {versions}; use {replacement} instead"
    fix_title = "Pass the replacement argument"
    fixable = "sometimes"

    @classmethod
    def docstring(cls) -> str:
        return with_migration_notes(cls.__doc__ or "", cls.name)

    def visit_Call(self, node: cst.Call) -> None:
        argument_names, bool_positions = _argument_filter()
        interesting = False
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value in argument_names:
                interesting = True
                break
        if not interesting and not (bool_positions and _bool_literal(node.args[0].value if node.args else None)):
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
                replacement=_weights_advice(entry.argument, arg, qualname) or entry.replacement,
                fix=self._fix(node, arg, qualname),
            )


    def _fix(self, call: cst.Call, arg: cst.Arg, qualname: str | None) -> Fix | None:
        """pretrained=/pretrained_backbone= → weights=/weights_backbone= (same weights)."""
        if arg.keyword is None or not _bool_literal(arg.value) or not qualname:
            return None
        old = arg.keyword.value
        new = _NEW_KEYWORD.get(old)
        if new is None or _find_keyword(call, new) is not None:
            return None
        value = _legacy_weights(old, arg.value.value == "True", qualname)  # type: ignore[attr-defined]
        if value is None:
            return None
        if fixes.comments_in(arg):
            return None
        edit = fixes.replace(self.ctx, arg, f"{new}={value}")
        return Fix(f"Pass {new}={value}", Applicability.SAFE, (edit,))


_NEW_KEYWORD = {"pretrained": "weights", "pretrained_backbone": "weights_backbone"}


def _legacy_weights(old: str, flag: bool, qualname: str) -> str | None:
    """The value of the new keyword that loads exactly what ``old=flag`` loads, when known:
    ``None`` for False, ``"IMAGENET1K_V1"`` for a classification builder or a backbone."""
    if not flag:
        return "None"
    parts = qualname.split(".")
    if old == "pretrained_backbone" or (
        len(parts) >= 3
        and parts[:2] == ["torchvision", "models"]
        and parts[2] not in _NON_CLASSIFICATION
        and parts[-1] not in _NO_V1_WEIGHTS
    ):
        return '"IMAGENET1K_V1"'
    return None


def _weights_advice(argument: str | None, arg: cst.Arg, qualname: str | None) -> str | None:
    """The replacement the message recommends for ``pretrained=True/False``: the same weights
    as the fix writes (``"DEFAULT"`` may be newer, different weights, so it is offered only as
    a deliberate change)."""
    new = _NEW_KEYWORD.get(argument or "")
    if new is None or not _bool_literal(arg.value) or not qualname:
        return None
    flag = arg.value.value == "True"  # type: ignore[attr-defined]
    value = _legacy_weights(argument, flag, qualname)  # type: ignore[arg-type]
    if value == "None":
        return f"{new}=None"
    if value is not None:
        return f'{new}={value} (the weights {argument}=True loads; "DEFAULT" may be newer, different weights)'
    return (f"{new}= with the weights enum value {argument}=True loads (named in the builder's documentation; "
            '"DEFAULT" may be newer, different weights)')


#: torchvision.models submodules whose legacy `pretrained=True` weights are not IMAGENET1K_V1
_NON_CLASSIFICATION = frozenset({"detection", "segmentation", "video", "optical_flow", "quantization"})
#: classification builders without IMAGENET1K_V1 weights
_NO_V1_WEIGHTS = frozenset({"vit_h_14", "regnet_y_128gf"})


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
