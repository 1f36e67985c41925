from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class InternalError(StaticRule):
    """## What it does
    Reports that a rule (or the engine) raised an exception on a file. The other rules and files
    are still checked; the run exits with code 2. ``--verbose`` prints the traceback.

    ## Why is this bad?
    It is a bug in torch-audit, not in your code: the failing rule said nothing about this file,
    so a real problem may have been missed. Please report it with the file if you can.

    ## References
    - [torch-audit issue tracker](https://github.com/torch-audit/torch-audit/issues)
    """

    code = "TA003"
    name = "internal-error"
    severity = Severity.ERROR
    message = "internal error in {rule}: {detail}"
    engine = True
