"""``nn.Module`` subclasses defined in the file: submodules built in ``__init__`` and ``forward``.

A class counts as a module when one of its bases resolves to a torch.nn layer or container, a
Lightning module, a Hugging Face ``PreTrainedModel``, another module class of this file, or a
module class of another module of the project.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import libcst as cst

from torch_audit.lint.facts.index import Scope
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext

MODULE_BASE_PREFIXES = ("torch.nn.",)
MODULE_BASES = frozenset(
    {
        "lightning.pytorch.LightningModule",
        "lightning.LightningModule",
        "lightning.pytorch.core.LightningModule",
        "lightning.pytorch.core.module.LightningModule",
        "transformers.PreTrainedModel",
        "transformers.modeling_utils.PreTrainedModel",
    }
)
LIGHTNING_BASES = frozenset(b for b in MODULE_BASES if b.startswith("lightning"))


@dataclasses.dataclass(eq=False)
class Submodule:
    attr: str
    ctor: cst.Call
    qualname: str | None
    scope: Scope


@dataclasses.dataclass(eq=False)
class ModuleClass:
    name: str
    node: cst.ClassDef
    scope: Scope
    bases: list[str | None]
    lightning: bool

    @property
    def init(self) -> Scope | None:
        return self.scope.functions().get("__init__")

    @property
    def forward(self) -> Scope | None:
        return self.scope.functions().get("forward")

    def method(self, name: str) -> Scope | None:
        return self.scope.functions().get(name)

    @functools.cached_property
    def submodules(self) -> dict[str, Submodule]:
        """``self.<attr> = <call>`` assignments made in ``__init__`` (the last one wins)."""
        out: dict[str, Submodule] = {}
        for attr, defs in self.scope.attributes.items():
            for a in defs:
                if (
                    a.kind == "assign"
                    and isinstance(a.value, cst.Call)
                    and a.stmt is not None
                    and a.stmt.scope.name == "__init__"
                ):
                    out[attr] = Submodule(attr, a.value, a.stmt.scope.qualname(a.value.func), a.stmt.scope)
        return out


class ModuleFacts:
    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx

    @functools.cached_property
    def classes(self) -> dict[str, ModuleClass]:
        """Every module class of the file by name (nested classes included)."""
        candidates: dict[str, tuple[cst.ClassDef, Scope, list[str | None], list[str | None]]] = {}
        for scope in self.ctx.module_scope.walk():
            if scope.kind != "class":
                continue
            node = scope.node
            assert isinstance(node, cst.ClassDef)
            outer = scope.parent or scope
            quals = [outer.qualname(b.value) for b in node.bases if b.keyword is None]
            raw = [dotted(b.value) for b in node.bases if b.keyword is None]
            candidates[scope.name] = (node, scope, quals, raw)
        result: dict[str, ModuleClass] = {}
        changed = True
        while changed:  # a class deriving from a local module class is a module too
            changed = False
            for name, (node, scope, quals, raw) in candidates.items():
                if name in result:
                    continue
                is_module = (
                    any(q is not None and (q.startswith(MODULE_BASE_PREFIXES) or q in MODULE_BASES) for q in quals)
                    or any(r in result for r in raw if r)
                    # a base class of another module of the project that is an nn.Module
                    or any(self.ctx.crossfile.is_module_class(q) for q in quals if q)
                )
                if is_module:
                    lightning = any(q in LIGHTNING_BASES for q in quals if q) or any(
                        r in result and result[r].lightning for r in raw if r
                    )
                    result[name] = ModuleClass(name, node, scope, quals, lightning)
                    changed = True
        return result

    def local_class(self, name: str | None) -> ModuleClass | None:
        if name is None:
            return None
        return self.classes.get(name)

    def enclosing_class(self, scope: Scope) -> ModuleClass | None:
        """The module class whose method ``scope`` is (or is nested in)."""
        s: Scope | None = scope
        while s is not None:
            if s.kind == "class":
                return self.classes.get(s.name)
            s = s.parent
        return None
