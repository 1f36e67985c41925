"""What a method call returns, by the method's name: the object it is called on, or the same
values. Shared by the per-file facts and the project model (which sits below the facts' own
modules in the import graph)."""

from __future__ import annotations

#: Module methods that return the module they are called on (``model.to(device)``).
MODULE_SELF_METHODS = frozenset(
    {
        "to", "cuda", "cpu", "half", "float", "double", "bfloat16", "train", "eval",
        "requires_grad_", "apply", "share_memory", "to_empty", "xpu", "type",
    }
)
#: Tensor methods whose result has the same values (up to layout, dtype or device).
TRANSPARENT_METHODS = frozenset(
    {
        "to", "float", "double", "half", "bfloat16", "cuda", "cpu", "contiguous", "view",
        "reshape", "squeeze", "unsqueeze", "permute", "transpose", "flatten", "clone",
        "detach", "type", "type_as", "view_as", "reshape_as", "requires_grad_",
    }
)
