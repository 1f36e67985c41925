"""The deprecation table (``torch_audit/data/deprecations.toml``) and the uses of its APIs in a file.

The table is parsed once per process and indexed by qualified name. :func:`api_uses` finds, in one
file, every import, call and other reference of a listed API, through the qualified names of
:mod:`torch_audit.lint.facts.index` (``import torch as t; t.qr`` is ``torch.qr``; a user's own
``qr`` is not). The rules removed-torch-api, deprecated-torch-api, non-public-torch-api and
torchvision-deprecated-transform share one collection per file and each reports its own part;
deprecated-torch-argument asks :func:`argument_entries` about each call.

Versions: each entry's versions are those of its own package. torchvision versions are mapped to
the torch release they shipped with (0.13 ↔ 1.12, 0.15 ↔ 2.0, 0.N ↔ 2.(N-15)), so one
``torch-version`` setting filters every entry. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import functools
import pkgutil
import re
from typing import TYPE_CHECKING, Any, Iterable

import libcst as cst

from torch_audit.lint.facts.names import canonical, dotted, import_bindings, module_name

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext
    from torch_audit.lint.facts.index import Scope

KINDS = ("function", "class", "module", "argument", "attribute")
#: rules that report table entries, by name
REMOVED = "removed-torch-api"
DEPRECATED = "deprecated-torch-api"
ARGUMENT = "deprecated-torch-argument"
NON_PUBLIC = "non-public-torch-api"
TRANSFORM = "torchvision-deprecated-transform"
OVERRIDE_RULES = (NON_PUBLIC, TRANSFORM)
PACKAGES = ("torch", "torchvision", "functorch")
_KEYS = {
    "name", "names", "kind", "argument", "bool-position", "deprecated-in", "removed-in",
    "replacement", "drop-in", "note", "reference", "rule",
}
_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


class TableError(ValueError):
    """The deprecation table is malformed (a bug in torch-audit's data, caught by the tests)."""


def parse_version(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(".")]
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def torch_equivalent(package: str, version: tuple[int, int, int]) -> tuple[int, int, int]:
    """The torch release a version of ``package`` belongs to (torchvision 0.15 → torch 2.0)."""
    if package != "torchvision" or version[0] != 0:
        return version
    minor = version[1]
    if minor >= 15:
        return (2, minor - 15, 0)
    return (1, max(minor - 1, 0), 0)


@dataclasses.dataclass(frozen=True)
class ApiEntry:
    name: str
    kind: str
    replacement: str
    drop_in: bool
    note: str
    reference: str
    package: str
    deprecated_in: str | None = None
    removed_in: str | None = None
    argument: str | None = None
    bool_position: int | None = None
    rule: str | None = None

    @property
    def wildcard(self) -> bool:
        return self.name.endswith(".*")

    def status(self, target: tuple[int, int, int] | None) -> str | None:
        """``removed``, ``deprecated``, ``non-public``, or None when the target torch version
        predates the deprecation."""
        if self.deprecated_in is None:
            return "non-public"
        if target is not None:
            if torch_equivalent(self.package, parse_version(self.deprecated_in)) > target:
                return None
        if self.removed_in is not None:
            removed = torch_equivalent(self.package, parse_version(self.removed_in))
            if target is None or removed <= target:
                return "removed"
        return "deprecated"

    def rule_for(self, status: str) -> str:
        if self.rule is not None:
            return self.rule
        if self.kind == "argument":
            return ARGUMENT
        return REMOVED if status == "removed" else DEPRECATED

    def versions(self, status: str) -> str:
        """``deprecated in torch 1.9, removed in 1.13`` (the package's own versions)."""
        if self.deprecated_in is None:
            return "non-public"
        text = f"deprecated in {self.package} {self.deprecated_in}"
        if self.removed_in is not None and status == "removed":
            text += f", removed in {self.removed_in}"
        return text


@dataclasses.dataclass(frozen=True)
class Table:
    entries: tuple[ApiEntry, ...]
    #: non-argument entries by qualified name
    by_name: dict[str, tuple[ApiEntry, ...]]
    #: argument entries by callable's qualified name
    arguments: dict[str, tuple[ApiEntry, ...]]
    #: argument entries whose name ends in ``.*``: (module prefix with the dot, entry)
    argument_prefixes: tuple[tuple[str, ApiEntry], ...]
    #: last components of every non-argument name: a dotted expression can refer to a listed API
    #: only if it contains one of them (or a local alias of one)
    components: frozenset[str]


def _entry_problems(i: int, raw: dict[str, Any]) -> list[str]:
    where = f"entry {i + 1} ({raw.get('name') or raw.get('names')})"
    problems = []
    unknown = set(raw) - _KEYS
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    if ("name" in raw) == ("names" in raw):
        problems.append(f"{where}: needs exactly one of name / names")
    names = raw.get("names", [raw.get("name")])
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        problems.append(f"{where}: names must be non-empty strings")
        names = []
    for n in names:
        top = n.split(".", 1)[0]
        if top not in PACKAGES:
            problems.append(f"{where}: {n} is not in {PACKAGES}")
        if n.endswith(".*") and raw.get("kind") != "argument":
            problems.append(f"{where}: a '.*' name is only allowed for kind = 'argument'")
    if raw.get("kind") not in KINDS:
        problems.append(f"{where}: kind must be one of {KINDS}")
    if (raw.get("kind") == "argument") != isinstance(raw.get("argument"), str):
        problems.append(f"{where}: 'argument' is required for kind = 'argument' and only then")
    if "bool-position" in raw and (raw.get("kind") != "argument" or not isinstance(raw["bool-position"], int)):
        problems.append(f"{where}: 'bool-position' is an integer, for arguments only")
    for key in ("replacement", "note", "reference"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            problems.append(f"{where}: '{key}' must be a non-empty string")
    if isinstance(raw.get("reference"), str) and not raw["reference"].startswith("https://"):
        problems.append(f"{where}: 'reference' must be an https URL")
    if not isinstance(raw.get("drop-in"), bool):
        problems.append(f"{where}: 'drop-in' must be true or false")
    rule = raw.get("rule")
    if rule is not None and rule not in OVERRIDE_RULES:
        problems.append(f"{where}: rule must be one of {OVERRIDE_RULES}")
    for key in ("deprecated-in", "removed-in"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, str) or not _VERSION.match(v)):
            problems.append(f"{where}: '{key}' must be a version string like \"2.4\"")
    if raw.get("deprecated-in") is None and rule != NON_PUBLIC:
        problems.append(f"{where}: 'deprecated-in' is required (except for non-public aliases)")
    if rule == NON_PUBLIC and raw.get("deprecated-in") is not None:
        problems.append(f"{where}: a non-public alias has no 'deprecated-in'")
    d, r = raw.get("deprecated-in"), raw.get("removed-in")
    if isinstance(d, str) and isinstance(r, str) and _VERSION.match(d) and _VERSION.match(r):
        if parse_version(r) <= parse_version(d):
            problems.append(f"{where}: removed-in must be later than deprecated-in")
    if raw.get("drop-in") is True and raw.get("kind") != "argument":
        rep = raw.get("replacement", "")
        if not re.fullmatch(r"[A-Za-z_][\w.]*(<same name>)?", rep.replace(".<same name>", "<same name>")):
            problems.append(f"{where}: a drop-in replacement must be a qualified name")
    return problems


def build_table(data: dict[str, Any]) -> Table:
    """Validate and index the parsed TOML. Raises :class:`TableError` listing every problem."""
    raws = data.get("api")
    if set(data) - {"api"} or not isinstance(raws, list):
        raise TableError("the table must hold only [[api]] entries")
    problems = [p for i, raw in enumerate(raws) for p in _entry_problems(i, raw)]
    if problems:
        raise TableError("; ".join(problems))
    entries: list[ApiEntry] = []
    for raw in raws:
        for name in raw.get("names", [raw.get("name")]):
            replacement = raw["replacement"]
            if "<same name>" in replacement:
                replacement = replacement.replace("<same name>", name.rsplit(".", 1)[1])
            entries.append(
                ApiEntry(
                    name=name if name.endswith(".*") else canonical(name),
                    kind=raw["kind"],
                    replacement=replacement,
                    drop_in=raw["drop-in"],
                    note=raw["note"],
                    reference=raw["reference"],
                    package=name.split(".", 1)[0],
                    deprecated_in=raw.get("deprecated-in"),
                    removed_in=raw.get("removed-in"),
                    argument=raw.get("argument"),
                    bool_position=raw.get("bool-position"),
                    rule=raw.get("rule"),
                )
            )
    by_name: dict[str, list[ApiEntry]] = {}
    arguments: dict[str, list[ApiEntry]] = {}
    prefixes: list[tuple[str, ApiEntry]] = []
    seen: set[tuple[str, str | None]] = set()
    for e in entries:
        key = (e.name, e.argument)
        if key in seen:
            raise TableError(f"duplicate entry {e.name}" + (f" argument {e.argument}" if e.argument else ""))
        seen.add(key)
        if e.kind == "argument":
            if e.wildcard:
                prefixes.append((e.name[:-1], e))
            else:
                arguments.setdefault(e.name, []).append(e)
        else:
            by_name.setdefault(e.name, []).append(e)
    return Table(
        entries=tuple(entries),
        by_name={k: tuple(v) for k, v in by_name.items()},
        arguments={k: tuple(v) for k, v in arguments.items()},
        argument_prefixes=tuple(prefixes),
        components=frozenset(name.rsplit(".", 1)[-1] for name in by_name),
    )


@functools.lru_cache(maxsize=1)
def load_table() -> Table:
    """The packaged table, parsed and validated once per process (only when a file is linted or
    a rule's documentation is read: not at import)."""
    # the parser is imported here, not at the top: start-up pays for it only when the table is used
    from torch_audit.tomlcompat import toml_parser

    tomllib = toml_parser()

    # pkgutil (already loaded) reads package data through the package's loader, as
    # importlib.resources does, without importing importlib.resources and zipfile.
    data = pkgutil.get_data("torch_audit", "data/deprecations.toml")
    assert data is not None
    return build_table(tomllib.loads(data.decode("utf-8")))


@functools.lru_cache(maxsize=16)
def target_version(setting: str | None) -> tuple[int, int, int] | None:
    if setting is None or setting == "latest":
        return None
    return parse_version(setting)


def ctx_target(ctx: "FileContext") -> tuple[int, int, int] | None:
    settings = getattr(ctx, "settings", None)
    return target_version(getattr(settings, "torch_version", None))


# -- uses in one file ---------------------------------------------------------------------------

#: an ``if``/conditional expression whose test reads like a compatibility switch
_GUARD_TEST = re.compile(
    r"version|hasattr|getattr|GREATER|LESS|_GE_|_LT_|_GT_|_LE_|_GE\b|_LT\b|TORCH_\w*\d|is_available"
    r"|_AVAILABLE|HAS_|_has_|SUPPORTS|IS_TORCH",
    re.I,
)


@dataclasses.dataclass(eq=False)
class ApiUse:
    node: cst.CSTNode
    entry: ApiEntry
    #: the qualified name used (``torch.cuda.amp.GradScaler`` or a name below a listed module)
    qualname: str
    #: ``call``, ``import``, ``decorator`` or ``reference``
    how: str
    status: str
    rule: str


@dataclasses.dataclass(eq=False)
class _Candidate:
    node: cst.CSTNode
    scope: "Scope"
    how: str


class ApiUses:
    """Collects, during the engine's traversal, the dotted expressions and imports that may name
    a listed API (cheap filters only), and resolves them once the index is complete."""

    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx
        self.table = load_table()
        self.target = ctx_target(ctx)
        self._seen: set[int] = set()
        self._candidates: list[_Candidate] = []
        self._imports: list[ApiUse] = []
        self.aliases: set[str] = set()
        self._fixed_by_import: set[str] = set()
        self._result: list[ApiUse] | None = None

    # -- collection (called from the rules' visit_Name / visit_Attribute / visit_Import*) -----
    def see_expression(self, node: cst.Name | cst.Attribute) -> None:
        key = id(node)
        if key in self._seen:
            return
        self._seen.add(key)
        stack = self.ctx.stack
        parent = stack[-2] if len(stack) > 1 else None
        if isinstance(parent, cst.Attribute):
            return  # not the whole dotted chain (or the `.attr` Name of one)
        if isinstance(parent, (cst.ImportAlias, cst.ImportFrom, cst.AsName, cst.FunctionDef, cst.ClassDef,
                               cst.Param, cst.NameItem, cst.AssignTarget, cst.AugAssign, cst.For)):
            if not (isinstance(parent, cst.For) and parent.iter is node):
                return
        if isinstance(parent, cst.Arg) and parent.keyword is node:
            return
        if isinstance(parent, cst.AnnAssign) and parent.target is node:
            return
        if isinstance(node, cst.Name):
            if node.value not in self.table.components and node.value not in self.aliases:
                return
        else:
            parts = _parts(node)
            if parts is None:
                return
            if not any(p in self.table.components or p in self.aliases for p in parts):
                return
        if self._guarded(stack):
            return
        if isinstance(parent, cst.Call) and parent.func is node:
            how = "call"
        elif isinstance(parent, cst.Decorator):
            how = "decorator"
        else:
            how = "reference"
        self._candidates.append(_Candidate(node, self.ctx.scope, how))

    def see_import(self, node: cst.Import | cst.ImportFrom) -> None:
        key = id(node)
        if key in self._seen:
            return
        self._seen.add(key)
        pairs: list[tuple[cst.ImportAlias, str]] = []
        if isinstance(node, cst.Import):
            for alias in node.names:
                pairs.append((alias, module_name(alias.name)))
        else:
            if node.relative or isinstance(node.names, cst.ImportStar) or node.module is None:
                return
            base = module_name(node.module)
            for alias in node.names:
                pairs.append((alias, f"{base}.{module_name(alias.name)}"))
        guarded = None
        for alias, qual in pairs:
            if qual.split(".", 1)[0] not in PACKAGES:
                continue
            qual = canonical(qual)
            found = self._match(qual)
            if found is None:
                continue
            entry, status = found
            if guarded is None:
                guarded = self._guarded(self.ctx.stack)
            if guarded:
                continue
            self._imports.append(ApiUse(alias, entry, qual, "import", status, entry.rule_for(status)))
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.aliases.add(alias.asname.name.value)
            elif isinstance(node, cst.ImportFrom):
                local = module_name(alias.name)
                self.aliases.add(local)
                if (entry.rule_for(status) == NON_PUBLIC and entry.drop_in
                        and (entry.kind == "module" or entry.replacement.rsplit(".", 1)[-1] == local)):
                    # `from torch.x._private import Name` with a public `Name`: fixing the
                    # import fixes every use, which is not reported again
                    self._fixed_by_import.add(local)

    # -- results ----------------------------------------------------------------------------
    def uses(self) -> list[ApiUse]:
        """Every use in the file (resolved once; call at leave_Module)."""
        if self._result is None:
            out = list(self._imports)
            for c in self._candidates:
                qual = self._resolve(c)
                if qual is None:
                    continue
                found = self._match(qual)
                if found is None:
                    continue
                entry, status = found
                head = (dotted(c.node) or "").split(".", 1)[0]  # type: ignore[arg-type]
                if head in self._fixed_by_import and entry.rule_for(status) == NON_PUBLIC:
                    continue
                out.append(ApiUse(c.node, entry, qual, c.how, status, entry.rule_for(status)))
            self._result = out
        return self._result

    def for_rule(self, rule: str) -> Iterable[ApiUse]:
        return [u for u in self.uses() if u.rule == rule]

    # -- helpers ----------------------------------------------------------------------------
    def _resolve(self, c: _Candidate) -> str | None:
        name = dotted(c.node)  # type: ignore[arg-type]
        if name is None:
            return None
        head = name.split(".", 1)[0]
        owner = c.scope.lookup_scope(head)
        if owner is None or head not in owner.bindings:
            # a builtin, a name from `import *` (do not guess), or a local alias
            # (`f = torch.qr` is reported where torch.qr is named, not again at `f(a)`)
            return None
        if len(_imported_as(owner, head)) > 1:
            # imported twice (`from torch import vmap` / `from functorch import vmap` in a
            # try/except): which one is bound depends on the installed version. `import torch`
            # with `import torch._dynamo` binds the same `torch` twice: not ambiguous.
            return None
        qual = c.scope.qualname(c.node)  # type: ignore[arg-type]
        if qual is None or qual.split(".", 1)[0] not in PACKAGES:
            return None
        return qual

    def _match(self, qual: str) -> tuple[ApiEntry, str] | None:
        """The table entry for ``qual`` (or for the listed module/class it lies below)."""
        by_name = self.table.by_name
        candidate = qual
        exact = True
        while True:
            for entry in by_name.get(candidate, ()):
                if exact or entry.kind in ("module", "class"):
                    status = entry.status(self.target)
                    if status is not None:
                        return entry, status
            if "." not in candidate:
                return None
            candidate = candidate.rsplit(".", 1)[0]
            exact = False

    def _guarded(self, stack: list[cst.CSTNode]) -> bool:
        return compat_guarded(self.ctx, stack)


def _imported_as(scope: "Scope", local: str) -> set[str]:
    """The distinct qualified names the imports of ``scope`` bind to ``local``."""
    found: set[str] = set()
    for a in scope.assignments.get(local, ()):
        if a.kind != "import":
            continue
        stmt = a.stmt.node if a.stmt is not None else None
        smalls = stmt.body if isinstance(stmt, cst.SimpleStatementLine) else [stmt]
        quals = {qual for small in smalls if isinstance(small, (cst.Import, cst.ImportFrom))
                 for name, qual in import_bindings(small) if name == local}
        found |= quals or {f"<unknown {id(a)}>"}
    return found


def compat_guarded(ctx: "FileContext", stack: list[cst.CSTNode]) -> bool:
    """True when the innermost enclosing statements are a compatibility switch: an ``except``
    handler (``try: new API / except ImportError: old API``), or an ``if``/conditional
    expression testing a version, ``hasattr`` or availability. Code there uses the old API on
    purpose, for old versions."""
    for i, anc in enumerate(stack[:-1]):
        if isinstance(anc, cst.ExceptHandler):
            return True
        if isinstance(anc, cst.Try) and stack[i + 1] is anc.body and _catches_missing_api(anc):
            # `try: torch._dynamo.is_compiling() / except AttributeError:`: written knowing the
            # name may be gone
            return True
        if isinstance(anc, cst.Call) and _probes(anc, stack[i + 1]):
            return True  # getattr(torch._dynamo, "is_compiling", None), hasattr(...)
        if isinstance(anc, cst.BooleanOperation) and stack[i + 1] is anc.right and _is_guard(ctx, anc.left):
            return True  # hasattr(torch, "_dynamo") and torch._dynamo.is_compiling()
        if isinstance(anc, (cst.IndentedBlock, cst.Module)):
            # `if hasattr(torch, "new"): return new_api()` earlier in the block: what follows
            # is the fallback for old versions
            child = stack[i + 1]
            body = list(anc.body)
            position = next((k for k, stmt in enumerate(body) if stmt is child), len(body))
            for stmt in body[:position]:
                if isinstance(stmt, cst.If) and _returns(stmt.body) and _is_guard(ctx, stmt.test):
                    return True
            # `f = old_api` followed by `if hasattr(...): f = new_api`: a default for old versions
            target = _assigned_name(child, stack[i + 2] if i + 2 < len(stack) else None)
            if target is not None:
                for stmt in body[position + 1:]:
                    if isinstance(stmt, cst.If) and _is_guard(ctx, stmt.test) and _assigns(stmt.body, target):
                        return True
            continue
        if isinstance(anc, (cst.If, cst.IfExp)):
            child = stack[i + 1]
            if child is anc.test:
                continue
            if _is_guard(ctx, anc.test):
                return True
    return False


#: exceptions that a lookup of a vanished API raises
_MISSING_API_ERRORS = frozenset({"AttributeError", "ImportError", "ModuleNotFoundError"})


def _catches_missing_api(node: cst.Try) -> bool:
    for handler in node.handlers:
        kind = handler.type
        names = kind.elements if isinstance(kind, cst.Tuple) else [kind] if kind is not None else []
        for element in names:
            value = element.value if isinstance(element, cst.Element) else element
            if isinstance(value, cst.Name) and value.value in _MISSING_API_ERRORS:
                return True
    return False


def _probes(call: cst.Call, child: cst.CSTNode) -> bool:
    """``child`` is the object probed by ``getattr(obj, "name", ...)`` / ``hasattr(obj, ...)``."""
    func = call.func
    if not (isinstance(func, cst.Name) and func.value in ("getattr", "hasattr")):
        return False
    return bool(call.args) and call.args[0] is child


def _is_guard(ctx: "FileContext", test: cst.BaseExpression) -> bool:
    try:
        text = ctx.module.code_for_node(test)
    except Exception:  # pragma: no cover - defensive
        return False
    if _GUARD_TEST.search(text):
        return True
    # `if _SCALER_TAKES_DEVICE:` where the flag was computed from a version check
    name = test.expression if isinstance(test, cst.UnaryOperation) else test
    if isinstance(name, cst.Name):
        for a in ctx.module_scope.assignments.get(name.value, ()):
            if a.kind == "assign" and a.value is not None and _GUARD_TEST.search(ctx.module.code_for_node(a.value)):
                return True
    return False


def _assigned_name(stmt: cst.CSTNode, small: cst.CSTNode | None) -> str | None:
    """``name`` when ``stmt`` is ``name = <expr>``."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign):
        assign = stmt.body[0]
        if small is assign and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
            return assign.targets[0].target.value
    return None


def _assigns(body: cst.BaseSuite, name: str) -> bool:
    for stmt in body.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.Assign) and any(
                    isinstance(t.target, cst.Name) and t.target.value == name for t in small.targets
                ):
                    return True
    return False


def _returns(body: cst.BaseSuite) -> bool:
    stmts = body.body
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
    return isinstance(last, (cst.Return, cst.Raise))


def _parts(node: cst.BaseExpression) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return parts
    return None


def api_uses(ctx: "FileContext") -> ApiUses:
    """The file's shared collector (one per file, whichever rule asks first)."""
    uses = ctx.__dict__.get("_torch_audit_api_uses")
    if uses is None:
        uses = ApiUses(ctx)
        ctx.__dict__["_torch_audit_api_uses"] = uses
    return uses


# -- arguments ------------------------------------------------------------------------------------


def argument_entries(qualname: str | None) -> tuple[ApiEntry, ...]:
    """Deprecated-argument entries for a callable (exact name, or below a ``.*`` module)."""
    if qualname is None:
        return ()
    table = load_table()
    found = table.arguments.get(qualname, ())
    for prefix, entry in table.argument_prefixes:
        if qualname.startswith(prefix):
            found = (*found, entry)
    return found


# -- documentation --------------------------------------------------------------------------------


def migration_notes(rule: str) -> str:
    """A markdown list of the table's entries reported by ``rule`` with no ``torch-version``
    set (for the rule's documentation, so ``torch-audit rule`` shows every migration note)."""
    table = load_table()
    lines = []
    done: set[tuple[str | None, str]] = set()
    for e in table.entries:
        status = e.status(None) or "deprecated"
        if e.rule_for(status) != rule:
            continue
        label = f"`{e.name}`"
        if e.kind == "argument":
            if (e.argument, e.note) in done:
                continue
            done.add((e.argument, e.note))
            same = [x.name for x in table.entries if x.argument == e.argument and x.note == e.note]
            if len(same) > 3:
                short = ", ".join(n.rsplit(".", 1)[-1] for n in same[:3])
                label = f"`{e.argument}=` of {short}, … ({len(same)} callables)"
            else:
                label = f"`{e.argument}=` of " + ", ".join(f"`{n}`" for n in same)
        when = e.versions(status)
        drop = " (drop-in)" if e.drop_in else ""
        lines.append(f"- {label} ({when}) → `{e.replacement}`{drop}. {e.note}")
    return "\n".join(lines)


#: the line of a table rule's docstring that :func:`with_migration_notes` replaces
NOTES_MARKER = "{migration notes}"


def with_migration_notes(doc: str, rule: str) -> str:
    """``doc`` with its ``{migration notes}`` line replaced by the :func:`migration_notes` of
    ``rule``, indented like the marker (the docstring is dedented later)."""
    for line in doc.splitlines():
        if line.strip() == NOTES_MARKER:
            indent = line[: len(line) - len(line.lstrip())]
            notes = migration_notes(rule).replace("\n", "\n" + indent)
            return doc.replace(NOTES_MARKER, notes, 1)
    return doc


# -- the rules' shared machinery -------------------------------------------------------------------

_HOW = {"call": "Call of", "import": "Import of", "decorator": "Use of", "reference": "Reference to"}


def describe(use: ApiUse) -> dict[str, str]:
    """The fields of a table rule's message for one use."""
    e = use.entry
    name = use.qualname if use.qualname == e.name else f"{use.qualname} (in {e.name})"
    return {
        "how": _HOW[use.how],
        "name": name,
        "versions": e.versions(use.status),
        "replacement": e.replacement,
    }


class TableRule:
    """Mixin for the rules that report uses of table entries: the rule's ``name`` selects its
    share of the file's uses; collection and reporting are inherited. The docstring's
    ``{migration notes}`` line lists the rule's entries."""

    @classmethod
    def docstring(cls) -> str:
        return with_migration_notes(cls.__doc__ or "", cls.name)  # type: ignore[attr-defined]

    def visit_Name(self, node: cst.Name) -> None:
        uses = api_uses(self.ctx)  # type: ignore[attr-defined]
        if node.value in uses.table.components or node.value in uses.aliases:
            uses.see_expression(node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        stack = self.ctx.stack  # type: ignore[attr-defined]
        if len(stack) > 1 and isinstance(stack[-2], cst.Attribute):
            return  # only whole dotted chains
        api_uses(self.ctx).see_expression(node)  # type: ignore[attr-defined]

    def visit_Import(self, node: cst.Import) -> None:
        api_uses(self.ctx).see_import(node)  # type: ignore[attr-defined]

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        api_uses(self.ctx).see_import(node)  # type: ignore[attr-defined]

    def leave_Module(self, node: cst.Module) -> None:
        for use in api_uses(self.ctx).for_rule(self.name):  # type: ignore[attr-defined]
            self.report(use.node, **describe(use))  # type: ignore[attr-defined]
