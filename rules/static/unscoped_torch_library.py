import re

import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule

_TEST_PATH = re.compile(r"(^|[\\/])(tests?[\\/]|test_[^\\/]*\.py$|[^\\/]*_test\.py$)")


class UnscopedTorchLibrary(StaticRule):
    """## What it does
    Finds `torch.library.Library(...)` in tests: in test files (`test_*.py`, `*_test.py`, files
    under a `test`/`tests` directory) and in `test*` functions or `Test*` classes.

    ## Why is this bad?
    A `Library` object registers its operators for the life of the process: a test that defines
    one leaks the registrations into every later test, which then pass or fail depending on the
    order they run in. `torch.library._scoped_library(...)` is a context manager that removes the
    registrations when the test ends (it is what PyTorch's own tests use).

    ## Known problems
    Opt-in, and only in test files: in library code a long-lived `Library` is the point.
    `_scoped_library` is itself non-public: with `non-public-torch-symbol` (TA633) selected
    too, the import of the context manager this rule suggests is reported by that rule, which
    is right about it; PyTorch has no public scoped equivalent, so suppress TA633 on that line
    (`# noqa: TA633`) in the tests that use it.

    ## References
    - [torch.library](https://pytorch.org/docs/stable/library.html)
    - [pytorch/pytorch#118318](https://github.com/pytorch/pytorch/pull/118318)
    """

    code = "TA635"
    name = "unscoped-torch-library"
    severity = Severity.INFO
    message = "torch.library.Library in a test leaks its registrations into later tests; use torch.library._scoped_library"
    fix_title = "with torch.library._scoped_library(ns, kind) as lib: ..."
    opt_in = True

    def leave_Module(self, node: cst.Module) -> None:
        test_file = bool(_TEST_PATH.search(self.ctx.path.replace("\\", "/")))
        for call in self.ctx.indexer.all_calls:
            if call.qualname == "torch.library.Library" and (test_file or call.scope.in_pytest_test):
                self.report(call.node)
