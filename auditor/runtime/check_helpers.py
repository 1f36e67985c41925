"""What a runtime check may use besides its base class: the one facade between the checks in
``rules/runtime/`` and the runtime's modules (``tests/runtime/test_check_imports.py`` keeps it
so; the static rules' equivalent is ``torch_audit.lint.api``).

A check imports :mod:`torch_audit.runtime.check` (torch-free: listing the catalogue must not
import torch) at module level, and this module, which imports torch, inside ``setup()`` or its
event methods. The session itself is reached through ``self.session`` (see ``docs/runtime.md``,
"The subscriber API").
"""

from __future__ import annotations

from torch_audit.runtime import dist
from torch_audit.runtime.finite_preserving import finite_preserving_parameters, parameters_to_read
from torch_audit.runtime.first_nonfinite_op import FirstNonFiniteOp
from torch_audit.runtime.freezing_sites import freezing_lines
from torch_audit.runtime.layer_kinds import (
    BATCHNORM_TYPES,
    MODE_DEPENDENT_TYPES,
    is_batchnorm,
    is_dropout,
    mode_dependent,
)
from torch_audit.runtime.reduce import finite_sentinels, norms
from torch_audit.runtime.source import is_torch_class, optimizer_line, short_path, user_site

__all__ = [
    "BATCHNORM_TYPES",
    "MODE_DEPENDENT_TYPES",
    "FirstNonFiniteOp",
    "dist",
    "finite_preserving_parameters",
    "finite_sentinels",
    "freezing_lines",
    "is_batchnorm",
    "is_dropout",
    "is_torch_class",
    "mode_dependent",
    "names_list",
    "norms",
    "optimizer_line",
    "parameters_to_read",
    "short_path",
    "site_str",
    "user_site",
]


def names_list(names: list[str], limit: int = 4) -> str:
    """``a, b, c, d and 3 more``: a list of names for a message."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def site_str(site: tuple[str, int] | None) -> str:
    """``train.py:12`` for a ``(path, line)`` site (``<unknown>`` for None)."""
    if site is None:
        return "<unknown>"
    return f"{short_path(site[0])}:{site[1]}"
