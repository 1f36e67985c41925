import libcst as cst

from torch_audit.findings import Applicability, Fix, Severity
from torch_audit.lint.api import DEPRECATED, TableRule, api_uses, describe, fixes
from torch_audit.rule import StaticRule


class DeprecatedTorchApi(TableRule, StaticRule):
    """## What it does
    Finds calls, imports and other references (`f = torch.qr; f(a)`) of deprecated torch APIs,
    through qualified names (`import torch as t; t.qr(a)` is found, a function of your own called
    `qr` is not), and says what to use instead. The list is the deprecation table
    (`torch_audit/data/deprecations.toml`); with no `torch-version` set it reports:

    {migration notes}

    ## Why is this bad?
    Deprecated APIs warn at run time, are removed in a later release, and their replacements are
    usually better: the `torch.linalg` functions are faster, batched and consistent with NumPy;
    `torch.amp` works on every device; `torch.func` replaced functorch.

    ## Known problems
    The `torch-version` setting (or `--torch-version`) names the oldest torch the project
    supports: an API deprecated after that version is not reported, and an API the configured
    version still has although a later one removed it is reported here rather than as
    `removed-torch-api`. Uses in an `except` handler or under an `if` testing a version or
    `hasattr` are taken to be deliberate compatibility code and are not reported.

    ## Fix safety
    A one-to-one rename (the entries marked drop-in above, such as `torch.ger` → `torch.outer`,
    `F.upsample` → `F.interpolate`) is fixed when the code spells the full dotted name from an
    imported module (`torch.ger(...)`, `t.ger` with `import torch as t`, `F.upsample(...)`): the
    name is rewritten through the same alias. The fix is safe: the replacement is the same
    function under its new name. Imports (`from torch import ger`), names that are not
    drop-in replacements, and `torch.cuda.amp.GradScaler` called with positional arguments
    (the first argument of `torch.amp.GradScaler` is the device) are not fixed.

    ## References
    - [Migrating from functorch to torch.func](https://pytorch.org/docs/stable/func.migrating.html)
    - [Automatic mixed precision (torch.amp)](https://pytorch.org/docs/stable/amp.html)
    - [torch.linalg](https://pytorch.org/docs/stable/linalg.html)
    """

    code = "TA602"
    name = DEPRECATED
    severity = Severity.WARNING
    message = "{how} {name}, {versions}; use {replacement} instead"
    fix_title = "Migrate to the replacement (`torch-audit rule deprecated-torch-api` shows how)"
    fixable = "sometimes"

    def leave_Module(self, node: cst.Module) -> None:
        for use in api_uses(self.ctx).for_rule(self.name):
            self.report(use.node, fix=self._fix(use), **describe(use))

    def _fix(self, use) -> Fix | None:
        """Rename a drop-in replacement through the alias the code already uses."""
        entry = use.entry
        if not entry.drop_in or use.how not in ("call", "reference", "decorator"):
            return None
        node = use.node
        parts: list[str] = []
        current = node
        while isinstance(current, cst.Attribute):
            parts.append(current.attr.value)
            current = current.value
        if not isinstance(current, cst.Name) or not parts:
            return None
        root = self.ctx.qualname(current, self.ctx.module_scope)
        parts.reverse()
        if root is None or ".".join([root, *parts]) != use.qualname or use.qualname != entry.name:
            return None
        replacement = entry.replacement
        if not replacement.startswith(root + ".") or not all(
            p.isidentifier() for p in replacement[len(root) + 1 :].split(".")
        ):
            return None
        if entry.name in _POSITIONAL_CHANGES:
            parent = self.ctx.parent_of(node)
            if not (isinstance(parent, cst.Call) and parent.func is node):
                return None
            if any(a.keyword is None for a in parent.args):
                return None
        text = fixes.source_of(self.ctx, node, parens=False)
        if "\n" in text or "#" in text or "\\" in text:
            return None
        new = current.value + replacement[len(root) :]
        return Fix(f"Use {replacement}", Applicability.SAFE, (fixes.replace(self.ctx, node, new),))


#: drop-in renames whose positional parameters differ: fixed only when called with keywords
_POSITIONAL_CHANGES = frozenset({"torch.cuda.amp.GradScaler"})
