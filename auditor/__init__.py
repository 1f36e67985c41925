"""torch-audit: finds the silent bugs of PyTorch code.

``torch-audit lint`` reads source statically and never imports torch;
``torch_audit.audit(...)`` watches a live model at run time. Both produce
:class:`~torch_audit.findings.Finding` objects from one rule catalogue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch_audit.findings import Applicability, Finding, Fix, Severity

# The single source of the version (pyproject.toml reads it): importlib.metadata would cost
# tens of milliseconds at every start-up.
__version__ = "0.1.0"

__all__ = ["Applicability", "Finding", "Fix", "Severity", "__version__", "audit"]

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import audit


def __getattr__(name: str) -> Any:
    # The runtime imports torch; keep `import torch_audit` (and so the linter) torch-free.
    if name == "audit":
        try:
            from torch_audit.runtime.session import audit
        except ModuleNotFoundError as exc:
            from torch_audit.runtime.errors import RuntimeExtraMissing, is_torch_missing

            if is_torch_missing(exc):  # the lint-only install: say what to install, in one line
                raise RuntimeExtraMissing("torch_audit.audit()") from None
            raise
        return audit
    raise AttributeError(f"module 'torch_audit' has no attribute {name!r}")
