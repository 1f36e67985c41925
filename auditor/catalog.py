"""The rule catalogue: every rule module under ``torch_audit.rules.static`` and
``torch_audit.rules.runtime``, found by walking the packages. Adding a rule means adding a module;
there is no registry to edit.

Importing the catalogue never imports torch: runtime rule modules import it lazily.

The runtime (``torch-audit run``, ``torch_audit.audit()``) runs only runtime checks, but it
validates selectors and options that may name static rules (``ignore = ["TA101"]`` in
``[tool.torch-audit]`` is valid, ``TA10l`` is a typo). Importing the static rules for that would
import libcst and every rule module (about 0.4 s of start-up), so :func:`runtime_catalog` takes
what selection and configuration need to know of them (code, name, kind, severity, status,
opt-in, fixability, options) from an index generated from the rules themselves,
``auditor/data/static_rules.json`` (``python -m torch_audit.catalog --update-index``;
``tests/test_rule_index.py`` fails when it is stale). When the rule modules on disk are not
the ones indexed (a rule added, removed or renamed without regenerating it),
:func:`runtime_catalog` imports the whole catalogue instead: slower, not wrong.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch_audit.findings import Severity
from torch_audit.rule import Option, Rule

KINDS = ("static", "runtime")


class CatalogError(Exception):
    """A broken rule declaration (duplicate code, missing doc section, ...)."""


class UnknownSelector(ValueError):
    """A code, prefix or name that matches no rule."""


@dataclass
class Catalog:
    #: rule classes; in :func:`runtime_catalog`, the static rules are :class:`IndexedRule`s
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
    problems.extend(_duplicates(rules))
    if problems:
        raise CatalogError("; ".join(problems))
    return Catalog(rules)


def _duplicates(rules: Iterable[Any]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for rule in rules:
        where = _module_of(rule)
        for key in (rule.code, rule.name):
            if key in seen:
                problems.append(f"duplicate rule code or name {key!r} ({seen[key]}, {where})")
            seen[key] = where
    return problems


# ----------------------------------------------------------------------------------------------
# the index of the static rules, for the runtime (see the module's docstring)
# ----------------------------------------------------------------------------------------------

#: the generated index (package data)
INDEX_PATH = Path(os.path.dirname(os.path.abspath(__file__)), "data", "static_rules.json")
#: bumped when the index's shape changes (an index of another format is not used)
INDEX_FORMAT = 1
INDEX_COMMAND = "python -m torch_audit.catalog --update-index"
_OPTION_TYPES: dict[str, type] = {t.__name__: t for t in (bool, int, float, str, list, dict)}
#: where the static rule modules live: (package, the root it is below, its folder there)
_INDEXED_FOLDERS = (
    ("torch_audit.rules.static", "torch_audit.rules", "static"),
    ("torch_audit.lint.engine_findings", "torch_audit", "lint/engine_findings"),
)


class IndexedRule:
    """A static rule as the index knows it: the attributes selection, configuration and the
    runtime's reports read, without importing the rule module (and libcst). Any other attribute
    (``message``, ``doc_sections()``, ...) is the rule class's, imported on first use. Compared
    and hashed by identity, as rule classes are. (A plain class: a dataclass would cost ``lint``'s
    start-up a millisecond to create.)"""

    __slots__ = ("code", "name", "kind", "severity", "status", "opt_in", "fixable", "options", "module")

    def __init__(self, *, code: str, name: str, kind: str, severity: Severity, status: str,
                 opt_in: bool, fixable: str, options: Mapping[str, Option], module: str) -> None:
        self.code = code
        self.name = name
        self.kind = kind
        self.severity = severity
        self.status = status
        self.opt_in = opt_in
        self.fixable = fixable
        self.options = options
        #: the module that defines the rule
        self.module = module

    def __repr__(self) -> str:
        return f"IndexedRule({self.code} {self.name}, {self.module})"

    def rule_class(self) -> type[Rule]:
        """The rule itself (imports its module, and libcst)."""
        module = importlib.import_module(self.module)
        return next(cls for cls in _rule_classes(module) if cls.code == self.code)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy, pickle, ... ask for dunders: not the rule's
            raise AttributeError(attr)
        return getattr(self.rule_class(), attr)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> "IndexedRule":
        options = {
            key: Option(opt["default"], opt["help"],
                        tuple(_OPTION_TYPES[t] for t in opt["type"]) if len(opt["type"]) > 1
                        else _OPTION_TYPES[opt["type"][0]])
            for key, opt in entry["options"].items()
        }
        return cls(code=entry["code"], name=entry["name"], kind=entry["kind"],
                   severity=Severity(entry["severity"]), status=entry["status"],
                   opt_in=entry["opt_in"], fixable=entry["fixable"], options=options,
                   module=entry["module"])


def _index_entry(rule: type[Rule]) -> dict[str, Any]:
    options = {}
    for key, opt in rule.options.items():
        expected = opt.type or type(opt.default)
        types = expected if isinstance(expected, tuple) else (expected,)
        unknown = [t for t in types if _OPTION_TYPES.get(getattr(t, "__name__", "")) is not t]
        if unknown:
            raise CatalogError(f"{rule.__module__}: option {key!r} of type {unknown[0]!r} cannot be "
                               f"indexed (known: {', '.join(_OPTION_TYPES)})")
        default = list(opt.default) if isinstance(opt.default, tuple) else opt.default
        options[key] = {"default": default, "help": opt.help, "type": [t.__name__ for t in types]}
    return {
        "code": rule.code, "name": rule.name, "kind": rule.kind,
        "severity": Severity.parse(rule.severity).value, "status": rule.status,
        "opt_in": bool(rule.opt_in), "fixable": rule.fixable, "options": options,
        "module": rule.__module__,
    }


def _package_root(package: str) -> Path:
    """The folder of ``torch_audit`` or ``torch_audit.rules`` (two places: see pyproject.toml's
    ``package-dir``), importing nothing but the latter's empty ``__init__``."""
    if package == "torch_audit":
        return Path(__file__).resolve().parent
    return Path(importlib.import_module(package).__file__ or "").resolve().parent


def _rule_modules_on_disk() -> set[str]:
    """The static rule modules the catalogue would import (:func:`_iter_rule_modules`'s
    walk, read from the folders' listings: nothing is imported)."""
    names = set()
    for package, root, folder in _INDEXED_FOLDERS:
        for path in (_package_root(root) / folder).glob("*.py"):
            if not path.stem.startswith("_"):
                names.add(f"{package}.{path.stem}")
    return names


def index_text() -> str:
    """The index of the static rules, as :data:`INDEX_PATH` should hold it (imports them all)."""
    import json

    data = {
        "format": INDEX_FORMAT,
        "generated_by": INDEX_COMMAND,
        "rules": [_index_entry(rule) for rule in load_catalog(("static",)).rules],
    }
    return json.dumps(data, indent=1) + "\n"


def indexed_static_rules() -> list[IndexedRule] | None:
    """The static rules from the index, or None when it is missing, of another format, or
    stale in a way a folder listing shows (a rule module added, removed or renamed). A
    changed declaration in an existing module is not seen here: ``tests/test_rule_index.py``
    compares the index with the rules themselves."""
    import json

    try:
        data = json.loads(INDEX_PATH.read_text(encoding="utf-8"))
        if data.get("format") != INDEX_FORMAT:
            return None
        rules = [IndexedRule.from_entry(entry) for entry in data["rules"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if {rule.module for rule in rules} != _rule_modules_on_disk():
        return None
    return rules


@functools.lru_cache(maxsize=None)
def runtime_catalog() -> Catalog:
    """The catalogue as the runtime needs it: the runtime checks themselves, and the static
    rules as :class:`IndexedRule`s from the index, so that selectors and options naming them are
    validated exactly as :func:`load_catalog`'s would be, without importing them. A missing or
    stale index falls back to :func:`load_catalog`."""
    static = indexed_static_rules()
    if static is None:
        return load_catalog()
    runtime = load_catalog(("runtime",)).rules
    problems = _duplicates([*runtime, *static])
    if problems:
        raise CatalogError("; ".join(problems))
    return Catalog([*runtime, *static])


def _module_of(rule: Any) -> str:
    return rule.module if isinstance(rule, IndexedRule) else rule.__module__


def slug_of(rule: type[Rule]) -> str:
    """The module (and fixture folder) name of a rule."""
    return _module_of(rule).rsplit(".", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    """``python -m torch_audit.catalog --update-index`` regenerates the index of the static
    rules; ``--check`` exits 1 when it is stale."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m torch_audit.catalog", description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--update-index", action="store_true", help=f"rewrite {INDEX_PATH.name}")
    group.add_argument("--check", action="store_true", help="exit 1 when the index is stale")
    args = parser.parse_args(argv)
    text = index_text()
    current = INDEX_PATH.read_text(encoding="utf-8") if INDEX_PATH.exists() else None
    if args.check:
        if current != text:
            print(f"{INDEX_PATH} is stale: {INDEX_COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        INDEX_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {INDEX_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # run as a script: use the package's own module (one Catalog class)
    from torch_audit.catalog import main as _main

    sys.exit(_main())
