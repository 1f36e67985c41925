from torch_audit.findings import Severity
from torch_audit.lint.api import TRANSFORM, TableRule
from torch_audit.rule import StaticRule


class TorchvisionDeprecatedTransform(TableRule, StaticRule):
    """## What it does
    Finds uses of deprecated or removed torchvision transforms, such as `transforms.v2.ToTensor`,
    `transforms.Scale` and the private `transforms.functional_tensor` module. The list is the
    `torchvision-deprecated-transform` part of the deprecation table
    (`torch_audit/data/deprecations.toml`):

    {migration notes}

    ## Why is this bad?
    `v2.ToTensor` mixes two steps (conversion to an image tensor and scaling to `[0, 1]`) that v2
    keeps apart, and is going away; the removed names raise on current torchvision.

    ## Known problems
    The v1 `torchvision.transforms.ToTensor` is not deprecated and not reported. Versions in the
    table are torchvision's; `torch-version` filters them through the torch release each
    torchvision release belongs to (torchvision 0.16 is torch 2.1).

    ## References
    - [torchvision transforms v2](https://pytorch.org/vision/stable/transforms.html)
    """

    code = "TA605"
    name = TRANSFORM
    severity = Severity.WARNING
    message = "{how} {name}, {versions}; use {replacement} instead"
    fix_title = "Migrate to the replacement transform"
