"""Dotted names and import bindings: how ``F.softmax`` becomes ``torch.nn.functional.softmax``.

Only syntax is used: an import binds a local name to a qualified name, and a simple assignment of
a dotted name (``CE = nn.CrossEntropyLoss``) binds an alias. Nothing is imported.
"""

from __future__ import annotations

import functools

import libcst as cst

#: Long module paths that PyTorch re-exports under a shorter public name. Qualified names are
#: normalised to the public spelling so that rules match one set of names.
_CANONICAL_PREFIXES = (
    ("torch.nn.parallel.data_parallel.", "torch.nn."),
    ("torch.nn.parallel.distributed.", "torch.nn.parallel."),
    ("torch.optim.adam.", "torch.optim."),
    ("torch.optim.adamw.", "torch.optim."),
    ("torch.optim.sgd.", "torch.optim."),
    ("torch.optim.optimizer.", "torch.optim."),
    ("torch.utils.data.dataloader.", "torch.utils.data."),
    ("torch.utils.data.distributed.", "torch.utils.data."),
    ("torch._C._nn.", "torch.nn.functional."),
    ("pytorch_lightning.", "lightning.pytorch."),
)


@functools.lru_cache(maxsize=8192)
def canonical(qualname: str) -> str:
    if qualname.startswith("torch.nn.modules."):
        return _nn_module_name(qualname)
    for prefix, public in _CANONICAL_PREFIXES:
        if qualname.startswith(prefix):
            return public + qualname[len(prefix):]
    return qualname


def _nn_module_name(qualname: str) -> str:
    """``torch.nn.modules.loss.CrossEntropyLoss`` and ``torch.nn.modules.Linear`` are
    ``torch.nn.<Class>``: torch.nn re-exports every public layer class. Private names
    (``torch.nn.modules.loss._Loss``), helpers (``torch.nn.modules.utils._pair``) and the
    submodules themselves keep their own path: ``torch.nn._Loss`` does not exist."""
    parts = qualname[len("torch.nn.modules."):].split(".")
    last = parts[-1]
    public_class = last[:1].isupper()
    if public_class and (len(parts) == 1 or (len(parts) == 2 and parts[0] != "utils" and parts[0].islower())):
        return f"torch.nn.{last}"
    return qualname


def dotted(expr: cst.BaseExpression | None) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        parts.append(expr.value)
        return ".".join(reversed(parts))
    return None


def module_name(node: cst.BaseExpression | cst.ImportStar | None) -> str:
    """The dotted text of an import's module expression (``torch.nn``)."""
    if node is None:
        return ""
    name = dotted(node)  # type: ignore[arg-type]
    return name or ""


def import_bindings(node: cst.Import | cst.ImportFrom) -> list[tuple[str, str]]:
    """(local name, qualified name) pairs bound by an import statement.

    ``import torch.nn as nn`` → (nn, torch.nn); ``import torch.nn`` → (torch, torch);
    ``from torch import nn`` → (nn, torch.nn); relative imports bind ``.mod.name``."""
    out: list[tuple[str, str]] = []
    if isinstance(node, cst.Import):
        for alias in node.names:
            full = module_name(alias.name)
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                out.append((alias.asname.name.value, full))
            else:
                top = full.split(".", 1)[0]
                out.append((top, top))
        return out
    if isinstance(node.names, cst.ImportStar):
        return out
    base = "." * len(node.relative) + module_name(node.module)
    for alias in node.names:
        name = module_name(alias.name)
        local = (
            alias.asname.name.value
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name)
            else name
        )
        out.append((local, f"{base}.{name}" if base and not base.endswith(".") else base + name))
    return out
