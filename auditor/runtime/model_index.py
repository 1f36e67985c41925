"""Names for what the session sees: qualified module and parameter names under the outermost
modules ("roots") that ran a forward pass or were passed as ``model=``.

Everything is held weakly: the index never keeps a model alive.

The model may change while the session runs (a layer appended, ``layer.weight =
nn.Parameter(...)``). The session forwards torch's global module/parameter registration hooks to
:meth:`ModelIndex.registered`, which only marks the index stale when the module being changed
is one it knows; the next lookup rebuilds it. So a change costs one rebuild, and an unchanged
model costs one attribute test per lookup (no walk over the parameters, no host read).
"""

from __future__ import annotations

import weakref
from typing import Any, Iterator

import torch
from torch.utils.weak import WeakIdKeyDictionary


class ModelIndex:
    def __init__(self) -> None:
        #: (root, label) pairs; the label names the root in qualified names when there are
        #: several roots, and is unique among them ("Sequential", "Sequential#2").
        self._roots: list[tuple[weakref.ref, str]] = []
        self._stale = False
        self._version = 0
        # Values that are modules are held weakly: a module as the value of its own key (a root
        # is its own root), of its child (the parent holds the child) or of its parameter
        # would keep the key alive, and with it a model the script dropped, for the session
        self.module_names: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.module_root: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._module_parent: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.param_names: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.param_owner: WeakIdKeyDictionary = WeakIdKeyDictionary()
        #: the module add_root last saw and the index version then: the same model's next
        #: forward is known without a lookup while nothing was rebuilt (add_root runs before
        #: every outermost forward)
        self._last_root: tuple[weakref.ref, int] | None = None

    # -- roots --------------------------------------------------------------------------------
    def _live_roots(self) -> list[tuple[torch.nn.Module, str]]:
        return [(m, label) for ref, label in self._roots if (m := ref()) is not None]

    def roots(self) -> list[torch.nn.Module]:
        return [m for m, _ in self._live_roots()]

    def knows(self, module: torch.nn.Module) -> bool:
        self._refresh()
        return module in self.module_names

    def add_root(self, module: torch.nn.Module) -> None:
        """Index ``module`` and its children (no-op when it is already a known submodule)."""
        last = self._last_root
        if last is not None and last[0]() is module and last[1] == self._version and not self._stale:
            return
        if self.knows(module):
            self._last_root = (weakref.ref(module), self._version)
            return
        # a new outer module absorbs the roots it contains
        inner = {id(m) for m in module.modules()}
        roots = [(r, label) for r, label in self._live_roots() if id(r) not in inner]
        roots.append((module, self._free_label(type(module).__name__, {label for _, label in roots})))
        self._roots = [(weakref.ref(r), label) for r, label in roots]
        self._rebuild()
        self._last_root = (weakref.ref(module), self._version)

    @staticmethod
    def _free_label(name: str, taken: set[str]) -> str:
        """``name``, or ``name#2``, ``name#3``... when another root of that class holds it (the
        same style as the optimizer labels)."""
        label, n = name, 1
        while label in taken:
            n += 1
            label = f"{name}#{n}"
        return label

    # -- structural changes -------------------------------------------------------------------
    def registered(self, module: torch.nn.Module, name: str, value: Any) -> None:
        """A global registration hook: ``module`` gets a new child module or parameter ``name``.

        Called before torch stores ``value``, so the rebuild waits for the next lookup. Modules
        the index does not know (a layer being constructed) are ignored: building models costs
        nothing. So is an object put back where the index has it: FSDP (``use_orig_params``)
        swaps the same parameters out and in around every forward and backward."""
        if self._stale or module not in self.module_names:
            return
        if value is not None and self._indexed_at(module, name, value):
            return
        self._stale = True

    def _indexed_at(self, module: torch.nn.Module, name: str, value: Any) -> bool:
        if isinstance(value, torch.nn.Module):
            return module._modules.get(name) is value
        if _deref(self.param_owner.get(value)) is not module:
            return False
        return self.param_names[value].rsplit(".", 1)[-1] == name

    def _refresh(self) -> None:
        if self._stale:
            self._rebuild()

    @property
    def version(self) -> int:
        """Goes up whenever the names change (a root added, a known module changed): checks
        that look at every parameter do it again then, not on every step."""
        self._refresh()
        return self._version

    def _rebuild(self) -> None:
        self._stale = False
        self._version += 1
        for table in (self.module_names, self.module_root, self._module_parent,
                      self.param_names, self.param_owner):
            table.clear()
        roots = self._live_roots()
        many = len(roots) > 1
        for root, root_label in roots:
            for qual, mod in root.named_modules(remove_duplicate=True):
                if mod not in self.module_names:  # a module shared by two roots: the first names it
                    self._add_module(mod, qual, root, root_label, many)

    def _add_module(self, mod: torch.nn.Module, qual: str, root: torch.nn.Module,
                    root_label: str, many: bool) -> None:
        name = qual if qual else root_label
        if many and qual:
            name = f"{root_label}.{qual}"
        self.module_names[mod] = name
        self.module_root[mod] = weakref.ref(root)
        for child in mod.children():
            if child not in self._module_parent:
                self._module_parent[child] = weakref.ref(mod)
        for pname, p in mod.named_parameters(recurse=False):
            if p not in self.param_names:
                self.param_names[p] = f"{name}.{pname}" if qual or many else pname
                self.param_owner[p] = weakref.ref(mod)

    # -- lookups ------------------------------------------------------------------------------
    def name(self, module: torch.nn.Module) -> str:
        self._refresh()
        return self.module_names.get(module) or type(module).__name__

    def root_of(self, module: torch.nn.Module) -> torch.nn.Module | None:
        self._refresh()
        return _deref(self.module_root.get(module))

    def parent(self, module: torch.nn.Module) -> torch.nn.Module | None:
        self._refresh()
        return _deref(self._module_parent.get(module))

    def param_name(self, param: torch.Tensor, fallback: str | None = None) -> str:
        self._refresh()
        name = self.param_names.get(param)
        if name is not None:
            return name
        return fallback or f"<parameter {tuple(param.shape)}>"

    def owner(self, param: torch.Tensor) -> torch.nn.Module | None:
        self._refresh()
        return _deref(self.param_owner.get(param))

    def parameters(self) -> Iterator[torch.Tensor]:
        self._refresh()
        return iter(list(self.param_names.keys()))

    def clear(self) -> None:
        self._roots = []
        self._last_root = None
        self._rebuild()


def _deref(ref: "weakref.ref | None") -> Any:
    return ref() if ref is not None else None
