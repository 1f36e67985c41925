from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class UnreadableFile(StaticRule):
    """## What it does
    Reports a file that cannot be read as Python source: undecodable bytes, NUL bytes, a wrong
    or unknown PEP 263 encoding cookie, or an operating-system error while reading.

    ## Why is this bad?
    The file cannot be checked, and Python itself would refuse to import it.

    ## References
    - [PEP 263: source code encodings](https://peps.python.org/pep-0263/)
    """

    code = "TA002"
    name = "unreadable-file"
    severity = Severity.ERROR
    message = "cannot read file: {reason}"
    engine = True
