from torch_audit.findings import Severity
from torch_audit.lint.api import REMOVED, TableRule
from torch_audit.rule import StaticRule


class RemovedTorchApi(TableRule, StaticRule):
    """## What it does
    Finds calls, imports and other references (`f = torch.solve`) of torch APIs that have been
    removed, such as `torch.solve`, `torch.symeig`, `torch.lstsq` and `torch.matrix_rank`, through
    qualified names (`import torch as t; t.solve(...)` is found, a function of your own called
    `solve` is not). The list is the `removed-in` part of the deprecation table
    (`torch_audit/data/deprecations.toml`):

    {migration notes}

    ## Why is this bad?
    The code fails with an `AttributeError` or `ImportError` on the torch versions that removed
    the API, usually on the first run after an upgrade, often deep inside a training job.

    ## Known problems
    With `torch-version` set below the version that removed the API, the use is reported as
    `deprecated-torch-api` instead, and not at all below the version that deprecated it. Uses in
    an `except` handler or under an `if` testing a version or `hasattr` are taken to be
    deliberate compatibility code and are not reported.

    ## References
    - [torch.linalg (the replacements of the removed linear algebra functions)](https://pytorch.org/docs/stable/linalg.html)
    - [The deprecation table](https://github.com/torch-audit/torch-audit/blob/main/auditor/data/deprecations.toml)
    """

    code = "TA601"
    name = REMOVED
    severity = Severity.ERROR
    message = "{how} {name}, {versions}; use {replacement} instead"
    fix_title = "Migrate to the replacement (`torch-audit rule removed-torch-api` shows how)"
