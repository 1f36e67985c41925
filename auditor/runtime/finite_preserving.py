"""Modules whose forward output is finite whenever their input (and parameters) are.

``nonfinite-activation`` reads every module output once per step to find the first one that went
non-finite. For the modules listed here that read is redundant when their input is itself a
module output the check has already read, unchanged since (same tensor object, same version
counter): a non-finite output then implies a non-finite input, which was seen earlier, so the
first non-finite module found is the same with or without the read. Skipping them removes a
large part of the check's cost in typical networks (the BatchNorm after every convolution, the
Dropout after a projection) without changing what it reports.

Only exact torch classes are listed (a subclass may override ``forward``), each with the
condition under which the implication holds:

- element-wise activations that never grow a value (``|f(x)| <= |x|`` or bounded), reshapes and
  max-pooling have no parameters and map finite values to finite values;
- dropout scales by ``1/(1-p)``;
- normalisation layers that normalise with the statistics of the current input (BatchNorm and
  InstanceNorm in training mode or without running statistics, LayerNorm, GroupNorm, RMSNorm)
  divide by ``sqrt(var + eps)`` with ``var >= 0``: finite for ``eps > 0`` and finite affine
  parameters, which get their own (tiny) reads instead of the output. In evaluation mode they
  use running statistics, which a non-finite batch can poison, so their output is read.
  SyncBatchNorm is not listed: its statistics include other ranks' inputs.

Scaling (dropout, an affine weight) can still overflow a finite value, so float16 outputs,
whose largest value is 65504, are always read; in the float32 range that needs values above
about 1e36, a network that has already gone wrong.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["parameters_to_read"]

#: parameter-free modules that map finite inputs to finite outputs
_ELEMENTWISE = frozenset({
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.Hardsigmoid,
    nn.Hardswish, nn.Mish, nn.Softsign, nn.ELU, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
    nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
})

#: normalisation with running statistics, used in evaluation mode
_BATCH_NORMS = frozenset({nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                          nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d})
#: normalisation with the input's own statistics, always
_NORMS = frozenset({nn.LayerNorm, nn.GroupNorm, *([nn.RMSNorm] if hasattr(nn, "RMSNorm") else [])})

_NONE: tuple[torch.Tensor, ...] = ()


def parameters_to_read(module: nn.Module, output: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """``None`` when ``module``'s ``output`` must be read; otherwise the parameters whose
    finiteness, with that of the input, implies a finite output (empty for parameter-free
    modules)."""
    if output.dtype is torch.float16:
        return None
    cls = type(module)
    if cls in _ELEMENTWISE:
        return _NONE
    if cls is nn.LeakyReLU:  # grows negative values when |slope| > 1
        return _NONE if abs(module.negative_slope) <= 1 else None
    if cls in _BATCH_NORMS:
        if module.running_mean is not None and not module.training:
            return None  # normalises with running statistics: read the output
        return _affine(module, module.eps)
    if cls in _NORMS:
        return _affine(module, getattr(module, "eps", None))
    return None


def _affine(module: nn.Module, eps: float | None) -> tuple[torch.Tensor, ...] | None:
    if eps is not None and not eps > 0:  # eps=0 divides a constant slice by zero
        return None
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    return tuple(p for p in (weight, bias) if isinstance(p, torch.Tensor))


#: The same predicate under a second name, for blame rather than for skipping reads:
#: nonfinite-activation asks it whether a module could have *made* a non-finite output from a
#: finite input (if not, the code that fed it is to blame). The tests disable skipping by
#: replacing ``parameters_to_read``; the blame must stay the same when they do.
finite_preserving_parameters = parameters_to_read
