"""The engine's own findings: declared by the mechanism, not by the rule catalogue's content.

These four report on the run itself (a file that cannot be parsed or read, a rule that failed,
a suppression that suppresses nothing), so the engine raises them directly; they are still
rules of the catalogue (codes TA0xx, `torch-audit rule`, selection, fixtures) because a user
selects, ignores and reads about them like any other. One module per finding, as in `rules/`,
so that their fixture folders keep their names.
"""

from torch_audit.lint.engine_findings.internal_error import InternalError
from torch_audit.lint.engine_findings.syntax_error import SyntaxErrorInFile
from torch_audit.lint.engine_findings.unreadable_file import UnreadableFile
from torch_audit.lint.engine_findings.unused_suppression import UnusedSuppression

ENGINE_FINDINGS = (SyntaxErrorInFile, UnreadableFile, InternalError, UnusedSuppression)

__all__ = ["ENGINE_FINDINGS", "InternalError", "SyntaxErrorInFile", "UnreadableFile", "UnusedSuppression"]
