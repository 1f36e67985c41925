from torch_audit.findings import Severity
from torch_audit.rule import StaticRule


class SyntaxErrorInFile(StaticRule):
    """## What it does
    Reports a file that is not valid Python, at the line and column where parsing failed.

    ## Why is this bad?
    A file that does not parse cannot be checked: every other rule is silent on it, so a bug in
    it would go unseen. The rest of the project is still linted.

    ## Known problems
    Files that never mention ``torch`` are skipped before parsing, so a syntax error in them is
    not reported: torch-audit is not a general syntax checker.

    ## References
    - [Python grammar](https://docs.python.org/3/reference/grammar.html)
    """

    code = "TA001"
    name = "syntax-error"
    severity = Severity.ERROR
    message = "SyntaxError: {detail}"
    engine = True
