import libcst as cst

from torch_audit.findings import Severity
from torch_audit.lint.api import module_name
from torch_audit.rule import StaticRule

SUBMODULES = ("models", "datasets", "transforms", "ops", "io", "utils")


class TorchvisionModelsImportStyle(StaticRule):
    """## What it does
    Finds `import torchvision.models as models` (and the same for `datasets`, `transforms`,
    `ops`, `io`, `utils`), which is `from torchvision import models` written the long way.

    ## Why is this bad?
    It is only style: both bind the same module. The `from` form is the one torchvision's
    documentation uses, and it keeps import sorting and codemods consistent.

    ## Known problems
    Opt-in, as in TorchFix.

    ## References
    - [torchvision.models](https://pytorch.org/vision/stable/models.html)
    """

    code = "TA632"
    name = "torchvision-models-import-style"
    severity = Severity.INFO
    message = "import torchvision.{sub} as {sub}: write `from torchvision import {sub}`"
    fix_title = "Use from torchvision import ..."
    opt_in = True

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            full = module_name(alias.name)
            head, _, sub = full.partition(".")
            if head != "torchvision" or sub not in SUBMODULES:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name) and alias.asname.name.value == sub:
                self.report(alias, sub=sub)
