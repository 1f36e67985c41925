"""torch-audit: finds the silent bugs of PyTorch code.

``torch-audit lint`` reads source statically and never imports torch;
``torch_audit.audit(...)`` watches a live model at run time. Both produce
:class:`~torch_audit.findings.Finding` objects from one rule catalogue.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version
from typing import TYPE_CHECKING, Any

from torch_audit.findings import Applicability, Finding, Fix, Severity

try:
    __version__ = _version("torch-audit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["Applicability", "Finding", "Fix", "Severity", "__version__", "audit"]

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.runtime.session import audit


def __getattr__(name: str) -> Any:
    # The runtime imports torch; keep `import torch_audit` (and so the linter) torch-free.
    if name == "audit":
        from torch_audit.runtime.session import audit

        return audit
    raise AttributeError(f"module 'torch_audit' has no attribute {name!r}")
