from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class UnusedSuppression(StaticRule):
    """## What it does
    Reports a ``# torch-audit: ignore[...]`` or ``# noqa: TA...`` comment that suppressed nothing
    in this run.

    ## Why is this bad?
    Stale suppressions hide the next real finding on that line and make readers believe a
    problem exists where none is left.

    ## Known problems
    A suppression of a rule that is not enabled in this run is not reported, since torch-audit
    cannot know whether it would have fired.

    ## References
    - [Ruff: unused-noqa (RUF100)](https://docs.astral.sh/ruff/rules/unused-noqa/)
    """

    code = "TA004"
    name = "unused-suppression"
    severity = Severity.WARNING
    message = "unused suppression of {codes}"
    status = "preview"
    engine = True
