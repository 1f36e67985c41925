"""The rule catalogue: every rule module under ``torch_audit.rules.static`` and
``torch_audit.rules.runtime``, found by walking the packages. Adding a rule means adding a module;
there is no registry to edit.

Importing the catalogue never imports torch: runtime rule modules import it lazily.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Iterable

from torch_audit.rule import Rule

KINDS = ("static", "runtime")


class CatalogError(Exception):
    """A broken rule declaration (duplicate code, missing doc section, ...)."""


class UnknownSelector(ValueError):
    """A code, prefix or name that matches no rule."""


@dataclass
class Catalog:
    rules: list[type[Rule]]
    by_code: dict[str, type[Rule]] = field(default_factory=dict)
    by_name: dict[str, type[Rule]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rules.sort(key=lambda r: r.code)
        for rule in self.rules:
            self.by_code[rule.code] = rule
            self.by_name[rule.name] = rule

    def get(self, code_or_name: str) -> type[Rule] | None:
        key = code_or_name.strip()
        return self.by_code.get(key.upper()) or self.by_name.get(key.lower())

    def __getitem__(self, code_or_name: str) -> type[Rule]:
        rule = self.get(code_or_name)
        if rule is None:
            raise UnknownSelector(f"unknown rule {code_or_name!r}")
        return rule

    def of_kind(self, kind: str) -> list[type[Rule]]:
        return [r for r in self.rules if r.kind == kind]

    def match(self, selector: str) -> set[str]:
        """Codes selected by ``ALL``, a code, a code prefix (``TA1``, ``TA10``) or a name."""
        sel = selector.strip()
        if not sel:
            raise UnknownSelector("empty rule selector")
        if sel.upper() == "ALL":
            return {r.code for r in self.rules}
        rule = self.get(sel)
        if rule is not None:
            return {rule.code}
        if re.fullmatch(r"TA[0-9]{0,3}", sel.upper()):
            codes = {r.code for r in self.rules if r.code.startswith(sel.upper())}
            if codes:
                return codes
        raise UnknownSelector(f"unknown rule code, prefix or name {selector!r}{self.did_you_mean(sel)}")

    def suggestions(self, text: str, n: int = 3) -> list[str]:
        """Codes or names close to ``text``: ``TA10O`` → TA101..., ``softmax`` → the names that
        contain it, ``bias-before-batchnorm`` → ``bias-before-norm``."""
        import difflib

        key = text.strip()
        if re.fullmatch(r"(?i)ta[0-9oOilI]{1,3}", key):  # a code, perhaps with O for 0, l for 1
            code = "TA" + key[2:].upper().replace("O", "0").replace("I", "1").replace("L", "1")
            codes = [r.code for r in self.rules]
            if code in codes:
                return [code]
            # the longest common prefix first (TA100 is nearer TA101 than TA001), then similarity
            scored = [
                (-len(os.path.commonprefix([code, c])), -difflib.SequenceMatcher(None, code, c).ratio(), c)
                for c in codes
            ]
            return [c for _, ratio, c in sorted(scored) if -ratio >= 0.75][:n]
        word = key.lower().replace("_", "-")
        names = [r.name for r in self.rules]
        close = difflib.get_close_matches(word, names, n=n, cutoff=0.6)
        containing = [name for name in names if len(word) >= 3 and word in name and name not in close]
        return (close + containing)[:n]

    def did_you_mean(self, text: str) -> str:
        """`` (did you mean 'x' or 'y'?)``, or ``""`` when nothing is close."""
        found = [repr(s) for s in self.suggestions(text)]
        if not found:
            return ""
        alternatives = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]
        return f" (did you mean {alternatives}?)"

    def specificity(self, selector: str) -> int:
        """How narrow a selector is: ``ALL`` < ``TA`` < ``TA1`` < ``TA10`` < a code or a name."""
        sel = selector.strip()
        if sel.upper() == "ALL":
            return 0
        if self.get(sel) is not None:
            return 10
        return len(sel)

    def resolve(
        self, layers: Iterable[Layer], *, preview: bool = False, kind: str | None = None
    ) -> Resolution:
        """Resolve selection the way Ruff does.

        Layers come lowest priority first (the configuration file, then the command line or
        keyword arguments). A layer with a ``select`` starts afresh from it, dropping what the
        layers below chose and ignored; a layer without one adjusts the selection below it
        (the default selection when there is none). Within a layer the narrower selector wins
        (``select = ["TA101"]`` with ``ignore = ["TA1"]`` keeps TA101), ``ignore`` on a tie.
        An explicit selector (a code or a name) enables even preview and opt-in rules; a broad
        one (``ALL``, a prefix) only enables what is on by default, unless ``preview`` is set."""
        chosen: set[str] | None = None
        explicit: set[str] = set()
        ignored: set[str] = set()
        for layer in layers:
            if layer.select is not None:
                chosen, explicit, ignored = set(), set(), set()
            elif chosen is None:
                chosen = {r.code for r in self.rules if not r.opt_in}
            steps = [(sel, True) for sel in (*(layer.select or ()), *layer.extend_select)]
            steps += [(sel, False) for sel in layer.ignore]
            # stable sort: broad before narrow, and at one width ignore after select
            steps.sort(key=lambda step: (self.specificity(step[0]), not step[1]))
            for sel, enable in steps:
                codes = self.match(sel)
                if enable:
                    chosen |= codes
                    ignored -= codes
                    if self.get(sel) is not None:
                        explicit |= codes
                else:
                    chosen -= codes
                    ignored |= codes
        if chosen is None:
            chosen = {r.code for r in self.rules if not r.opt_in}
        out = []
        for code in sorted(chosen):
            rule = self.by_code[code]
            if kind is not None and rule.kind != kind:
                continue
            if code not in explicit:
                if rule.status == "preview" and not preview:
                    continue
                if rule.opt_in:
                    continue
            out.append(rule)
        return Resolution(out, frozenset(ignored))

    def select(
        self,
        *,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
        extend_select: Iterable[str] = (),
        preview: bool = False,
        kind: str | None = None,
    ) -> list[type[Rule]]:
        """The rules one layer of settings selects (see :meth:`resolve`)."""
        layer = Layer(select, ignore, extend_select)
        return self.resolve([layer], preview=preview, kind=kind).rules


@dataclass(frozen=True)
class Layer:
    """One source of rule selection: ``select`` None keeps what the layers below selected."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()

    def __post_init__(self) -> None:  # accept any iterables, iterate them more than once
        if self.select is not None:
            object.__setattr__(self, "select", tuple(self.select))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "extend_select", tuple(self.extend_select))


@dataclass(frozen=True)
class Resolution:
    rules: list[type[Rule]]
    #: codes an ``ignore`` in effect removed (the runtime reports its internal errors unless so)
    ignored: frozenset[str]


def _rule_classes(module) -> list[type[Rule]]:
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Rule)
            and value.__module__ == module.__name__
            and "code" in vars(value)
        ):
            found.append(value)
    return found


def _iter_rule_modules(kind: str):
    packages = [importlib.import_module(f"torch_audit.rules.{kind}")]
    if kind == "static":
        # the engine's own findings are declared by the mechanism, beside the engine
        packages.insert(0, importlib.import_module("torch_audit.lint.engine_findings"))
    for package in packages:
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            yield importlib.import_module(f"{package.__name__}.{info.name}")


@functools.lru_cache(maxsize=None)
def load_catalog(kinds: tuple[str, ...] = KINDS) -> Catalog:
    """Import every rule module of the given kinds and check the declarations."""
    rules: list[type[Rule]] = []
    problems: list[str] = []
    for kind in kinds:
        for module in _iter_rule_modules(kind):
            classes = _rule_classes(module)
            if len(classes) != 1:
                problems.append(
                    f"{module.__name__}: expected exactly one rule class, found {len(classes)}"
                )
            for cls in classes:
                if cls.kind != kind:
                    problems.append(f"{module.__name__}: a {cls.kind} rule in rules/{kind}/")
                problems.extend(cls.declaration_problems())
                rules.append(cls)
    seen: dict[str, str] = {}
    for rule in rules:
        for key in (rule.code, rule.name):
            if key in seen:
                problems.append(f"duplicate rule code or name {key!r} ({seen[key]}, {rule.__module__})")
            seen[key] = rule.__module__
    if problems:
        raise CatalogError("; ".join(problems))
    return Catalog(rules)


def slug_of(rule: type[Rule]) -> str:
    """The module (and fixture folder) name of a rule."""
    return rule.__module__.rsplit(".", 1)[-1]
