from torch_audit.findings import Severity
from torch_audit.lint.facts.deprecations import DEPRECATED, TableRule, migration_notes
from torch_audit.rule import StaticRule


class DeprecatedTorchApi(TableRule, StaticRule):
    __doc__ = """## What it does
    Finds calls, imports and other references (`f = torch.qr; f(a)`) of deprecated torch APIs,
    through qualified names (`import torch as t; t.qr(a)` is found, a function of your own called
    `qr` is not), and says what to use instead. The list is the deprecation table
    (`torch_audit/data/deprecations.toml`); with no `torch-version` set it reports:

    """ + migration_notes(DEPRECATED).replace("\n", "\n    ") + """

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
