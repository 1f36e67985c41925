"""Which layers behave differently in ``train()`` and ``eval()`` (imports torch; checks reach it
through :mod:`torch_audit.runtime.check_helpers`)."""

from __future__ import annotations

from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
#: the classes of :func:`mode_dependent` layers (which also looks at ``p`` and
#: ``track_running_stats``): the forward hooks call the mode checks for these only
MODE_DEPENDENT_TYPES = DROPOUT_TYPES + BATCHNORM_TYPES


def is_dropout(m: nn.Module) -> bool:
    return isinstance(m, DROPOUT_TYPES) and getattr(m, "p", 0.0) > 0


def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, BATCHNORM_TYPES) and getattr(m, "track_running_stats", True)


def mode_dependent(m: nn.Module) -> bool:
    """Dropout or BatchNorm: layers that behave differently in train() and eval()."""
    return is_dropout(m) or is_batchnorm(m)
