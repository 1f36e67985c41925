import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import canonical, dotted, module_name
from torch_audit.rule import StaticRule

#: underscore names that torch documents as public
PUBLIC_UNDERSCORE = ("_foreach_", "_assert", "_check", "_logging")
PACKAGES = ("torch", "torchvision")


def private_part(qualname: str | None) -> str | None:
    """The first non-public component of a torch qualified name, else None."""
    if qualname is None:
        return None
    parts = qualname.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[:2] == ["torch", "ops"]:
        return None  # torch.ops.<namespace>: a library's own operator namespace (torch.ops._torchaudio)
    for part in parts[1:]:
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            if part.startswith(PUBLIC_UNDERSCORE):
                continue
            return part
    return None


class NonPublicTorchSymbol(StaticRule):
    """## What it does
    Finds calls and imports of any non-public torch or torchvision name: a component that starts
    with an underscore (`torch._C._get_tracing_state()`, `from torch._dynamo import config`,
    `torch.utils._pytree`), except the underscore names torch documents (`torch._assert`,
    `torch._check*`, `torch._foreach_*`, `torch._logging`).

    ## Why is this bad?
    Non-public APIs change or disappear between releases without deprecation; code that uses
    them breaks on upgrades. Where a public alias exists, `non-public-torch-api` (on by default)
    names it.

    ## Known problems
    Opt-in: some tasks have no public API (custom ops, compiler internals), and libraries built
    on torch use its internals deliberately. Operator namespaces under `torch.ops` are not
    torch's (`torch.ops._torchaudio` is torchaudio's own) and are not reported.

    ## References
    - [PyTorch public API definition](https://github.com/pytorch/pytorch/wiki/Public-API-definition-and-documentation)
    """

    code = "TA633"
    name = "non-public-torch-symbol"
    severity = Severity.INFO
    message = "{how} non-public {qualname} ({part} is private and may change without notice)"
    fix_title = "Use a public API, or pin the torch version this code depends on"
    opt_in = True

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        base = module_name(node.module)
        for alias in node.names:
            written = f"{base}.{module_name(alias.name)}"
            part = private_part(canonical(written)) or private_part(written)
            if part is not None:
                self.report(alias, how="Import of", qualname=written, part=part)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            written = module_name(alias.name)
            part = private_part(canonical(written)) or private_part(written)
            if part is not None:
                self.report(alias, how="Import of", qualname=written, part=part)

    def leave_Module(self, node: cst.Module) -> None:
        for call in self.ctx.indexer.all_calls:
            part = private_part(call.qualname)
            if part is not None:
                # the path the code imported it from: the canonical name may not exist
                # (`torch.nn.modules.utils._pair` is not `torch.nn.utils._pair`)
                shown = _written(call) or call.qualname
                self.report(call.node, how="Call of", qualname=shown, part=private_part(shown) or part)


def _written(call) -> str | None:
    """``call``'s function as imported: ``_pair`` from ``from torch.nn.modules.utils import
    _pair`` is ``torch.nn.modules.utils._pair``."""
    name = dotted(call.node.func)
    if name is None:
        return None
    head, _, rest = name.partition(".")
    scope = call.scope
    while scope is not None and head not in scope.bindings and head not in scope.assignments:
        scope = scope.parent
    if scope is None or head not in scope.bindings:
        return None
    base = scope.bindings[head]
    return f"{base}.{rest}" if rest else base
