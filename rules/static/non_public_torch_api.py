from torch_audit.findings import Severity
from torch_audit.lint.api import NON_PUBLIC, TableRule
from torch_audit.rule import StaticRule


class NonPublicTorchApi(TableRule, StaticRule):
    """## What it does
    Finds calls, imports and references of non-public torch names that have a public
    equivalent, such as `torch.utils.data._utils.collate.default_collate` (public:
    `torch.utils.data.default_collate`) and `torch.optim.lr_scheduler._LRScheduler` (public:
    `LRScheduler`). The list is the `non-public-torch-api` part of the deprecation table
    (`torch_audit/data/deprecations.toml`):

    {migration notes}

    ## Why is this bad?
    Non-public modules change or disappear without a deprecation period. The public name is the
    same object today and is covered by torch's compatibility promises.

    ## Known problems
    Only aliases with a public equivalent are reported; any use of `torch._*` is the opt-in rule
    `non-public-torch-symbol`. Compatibility code is left alone: a use inside
    `try: ... except (AttributeError, ImportError):`, in the handler of such a `try`, under a
    version or `hasattr` test (also `hasattr(...) and ...`), or probed with
    `getattr(obj, "name", default)`. A name imported from a non-public module whose public
    home has the same name (`from torch.distributed._tensor import DTensor`) is reported once,
    at the import: fixing the import fixes every use.

    ## References
    - [PyTorch public API definition](https://github.com/pytorch/pytorch/wiki/Public-API-definition-and-documentation)
    """

    code = "TA604"
    name = NON_PUBLIC
    severity = Severity.WARNING
    message = "{how} non-public {name}; use the public {replacement} instead"
    fix_title = "Use the public name"
