"""Small helpers shared by runtime checks (imports torch; rule modules import this lazily)."""

from __future__ import annotations

import math

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


def is_dropout(m: nn.Module) -> bool:
    return isinstance(m, DROPOUT_TYPES) and getattr(m, "p", 0.0) > 0


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, BATCHNORM_TYPES) and getattr(m, "track_running_stats", True)


def mode_dependent(m: nn.Module) -> bool:
    """Dropout or BatchNorm: layers that behave differently in train() and eval()."""
    return is_dropout(m) or is_batchnorm(m)


def finite(x: float) -> bool:
    return math.isfinite(x)


def names_list(names: list[str], limit: int = 4) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def site_str(site: tuple[str, int] | None) -> str:
    if site is None:
        return "<unknown>"
    from torch_audit.runtime.source import short_path

    return f"{short_path(site[0])}:{site[1]}"
