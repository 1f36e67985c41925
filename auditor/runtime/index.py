"""Names for what the session sees: qualified module and parameter names under the outermost
modules ("roots") that ran a forward pass or were passed as ``model=``.

Everything is held weakly: the index never keeps a model alive."""

from __future__ import annotations

import weakref
from typing import Iterator

import torch
from torch.utils.weak import WeakIdKeyDictionary


class ModelIndex:
    def __init__(self) -> None:
        self._roots: list[weakref.ref] = []
        self.module_names: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.module_root: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.module_parent: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.param_names: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.param_owner: WeakIdKeyDictionary = WeakIdKeyDictionary()

    # -- roots --------------------------------------------------------------------------------
    def roots(self) -> list[torch.nn.Module]:
        out = []
        for ref in self._roots:
            m = ref()
            if m is not None:
                out.append(m)
        return out

    def knows(self, module: torch.nn.Module) -> bool:
        return module in self.module_names

    def add_root(self, module: torch.nn.Module) -> None:
        """Index ``module`` and its children (no-op when it is already a known submodule)."""
        if module in self.module_names:
            return
        roots = [r for r in self.roots() if r is not module]
        # a new outer module absorbs the roots it contains
        inner = {id(m) for _, m in module.named_modules()}
        roots = [r for r in roots if id(r) not in inner]
        roots.append(module)
        self._roots = [weakref.ref(r) for r in roots]
        self._rebuild()

    def _rebuild(self) -> None:
        self.module_names.clear()
        self.module_root.clear()
        self.module_parent.clear()
        self.param_names.clear()
        self.param_owner.clear()
        roots = self.roots()
        many = len(roots) > 1
        for root in roots:
            root_label = type(root).__name__
            for qual, mod in root.named_modules(remove_duplicate=True):
                if mod in self.module_names:
                    continue
                name = qual if qual else root_label
                if many and qual:
                    name = f"{root_label}.{qual}"
                self.module_names[mod] = name
                self.module_root[mod] = root
                for child in mod.children():
                    if child not in self.module_parent:
                        self.module_parent[child] = mod
                for pname, p in mod.named_parameters(recurse=False):
                    if p not in self.param_names:
                        self.param_names[p] = f"{name}.{pname}" if qual or many else pname
                        self.param_owner[p] = mod

    # -- lookups ------------------------------------------------------------------------------
    def name(self, module: torch.nn.Module) -> str:
        return self.module_names.get(module) or type(module).__name__

    def root_of(self, module: torch.nn.Module) -> torch.nn.Module | None:
        return self.module_root.get(module)

    def param_name(self, param: torch.Tensor, fallback: str | None = None) -> str:
        name = self.param_names.get(param)
        if name is not None:
            return name
        return fallback or f"<parameter {tuple(param.shape)}>"

    def owner(self, param: torch.Tensor) -> torch.nn.Module | None:
        return self.param_owner.get(param)

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(list(self.param_names.keys()))

    def clear(self) -> None:
        self._roots = []
        self._rebuild()
