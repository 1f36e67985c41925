from __future__ import annotations

from torch_audit.findings import Severity
from torch_audit.runtime.check import RuntimeCheck


class RuntimeInternalError(RuntimeCheck):
    """## What it does
    Reports that a runtime check raised an exception. The session catches it, turns it into this
    finding and disables that check for the rest of the session; training goes on.

    ## Why is this bad?
    It is a bug in torch-audit (or an unusual model it does not handle yet), not in your
    training code; but it means a check stopped watching, so some problems may go unreported.

    ## References
    - https://github.com/torch-audit/torch-audit/issues
    """

    code = "TA799"
    name = "runtime-internal-error"
    severity = Severity.WARNING
    message = "check {check} raised {error}; it is disabled for the rest of this session"
    fix_title = "Report it to torch-audit with this message and the model's layer types; the other checks keep running"
    events = frozenset()
