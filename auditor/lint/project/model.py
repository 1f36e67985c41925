"""The linked project: every file's summary, names resolved across files, callers and callees.

Facts of one file (:mod:`torch_audit.lint.facts`) ask this model when their answer lies beyond
the file: what a class imported from another module returns from ``forward``, what a helper of
another file builds or does to its arguments, which arguments a function's parameters receive at
its call sites, which objects a class's constructor receives. Answers are sources and objects in
the shape the facts already use, each with the :class:`Evidence` (file, line, what) that a message
names.

Precision: a name resolves only when the code says what it is: one definition in one file; a name
assigned twice, reached through a third-party call, a ``getattr``, a parameter nobody in the
project passes, or a method name on an object of unknown class, is unknown, and unknown stops the
question. Every chain is bounded in depth, and cycles (mutual recursion, circular re-exports)
end in unknown.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# the same notions of "returns the same module" and "the same values" as the per-file dataflow's
from torch_audit.lint.facts.method_kinds import MODULE_SELF_METHODS, TRANSPARENT_METHODS
from torch_audit.lint.facts.names import canonical
from torch_audit.lint.project.layout import Layout
from torch_audit.lint.project.summary import UNKNOWN, Value

_MAX_DEPTH = 14
#: at most this many call sites are followed for one parameter
_MAX_CALL_SITES = 16
#: a name that more named files mention is not stamped with the list of its callers
_MAX_CALLER_STAMP = 32
#: the stamp of which files were named, beside a result that searched for callers
_NAMED = "@named"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Where the evidence of a cross-boundary fact is: ``pkg/model.py:13`` and what is there."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.what} in {self.path}:{self.line}"


@dataclasses.dataclass(eq=False)
class Frame:
    """A function of the project being evaluated, with what its parameters are bound to."""

    module: str
    fn: dict
    cls: str | None = None
    #: parameter → (argument value, the caller's frame)
    bindings: dict[str, tuple[Value, "Frame"]] | None = None
    #: the object ``self`` is, when the method was reached through a known instance
    self_obj: "Obj | None" = None

    @property
    def label(self) -> str:
        name = self.fn.get("name", "?")
        if name == "<module>":
            return "module level"
        return f"{self.cls}.{name}()" if self.cls else f"{name}()"


@dataclasses.dataclass(eq=False)
class Obj:
    """What an object is.

    kind: ``torch`` (built by a call of an outside name such as ``torch.nn.Conv2d``: ``name`` is
    its qualified name), ``instance`` (of the project class ``name`` in ``module``), ``class``
    and ``function`` (a project definition), ``unknown``."""

    kind: str
    name: str | None = None
    module: str | None = None
    args: list = dataclasses.field(default_factory=list)
    kwargs: dict = dataclasses.field(default_factory=dict)
    #: the frame the constructor arguments are evaluated in
    frame: Frame | None = None
    evidence: Evidence | None = None

    def literal_argument(self, position: int | None, keyword: str, default: Any = None) -> tuple[bool, Any]:
        """(known, value) of a literal constructor argument (``default`` when it is not passed);
        (False, None) when it is passed as something not known to be a literal."""
        value = self.kwargs.get(keyword)
        if value is None and position is not None and position < len(self.args):
            value = self.args[position]
        if value is None:
            if "**" in self.kwargs or any(a == ["*"] for a in self.args):
                return False, None
            return True, default
        return _literal_of(value, self.frame)

UNKNOWN_OBJ = Obj("unknown")


@dataclasses.dataclass(eq=False)
class Src:
    """What produced a value: ``call`` (qualified name or tensor method), ``module`` (a layer
    object applied: ``obj`` is it), ``literal``, ``unknown``."""

    kind: str
    qualname: str | None = None
    method: str | None = None
    evidence: Evidence | None = None
    obj: Obj | None = None
    #: for arithmetic and comparisons (``qualname`` :data:`ARITHMETIC`): the operands' sources
    operands: tuple = ()


UNKNOWN_SRC = Src("unknown")
#: the qualified name of the sources of arithmetic and comparisons
ARITHMETIC = "<arithmetic>"


@dataclasses.dataclass(eq=False)
class RemoteEvent:
    """A training event that a project function performs (directly or through its helpers)."""

    kind: str
    #: what it acts on, relative to the function: ("param", name, ".rest"), ("self", ".rest"),
    #: ("global", "name"), or None
    subject: tuple | None
    loops: int
    branches: int
    grad: bool | None
    evidence: Evidence
    record: dict


@dataclasses.dataclass(eq=False)
class CallSite:
    """A call of a project function (or construction of a project class) somewhere in the
    project: the call's value and the frame it is made in."""

    call: Value
    frame: Frame
    path: str
    line: int
    loops: int = 0
    branches: int = 0
    grad: bool | None = None


def _names_digest(keys: list[str]) -> str:
    import hashlib

    return hashlib.blake2b("|".join(keys).encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def _called_names(summary: dict) -> set[str]:
    """The names a file's functions (and module code) call: `fit` of `fit(...)`/`m.fit(...)`,
    and of `f(...)` after `from m import fit as f`."""
    frames = [summary.get("body") or {}]
    for d in summary["defs"].values():
        frames.extend(d.get("methods", {}).values() if d.get("kind") == "class" else [d])
    imports = summary.get("imports") or {}
    names = set()
    for fn in frames:
        for call, *_ in fn.get("calls", []):
            func = call[1]
            if func[0] in ("name", "self"):
                names.add(func[1].rpartition(".")[2])
                target = imports.get(func[1]) if func[0] == "name" else None
                if target is not None:
                    names.add(target.rpartition(".")[2])
    return names


class Project:
    """The summaries of the project's files, linked."""

    def __init__(
        self,
        layout: Layout,
        load: Callable[[Path], dict | None],
        display: Callable[[Path], str] = str,
        outline: Callable[[Path], dict | None] | None = None,
        store: Any = None,
    ) -> None:
        #: summarises single definitions of outlined modules, and hashes file contents
        self._store = store
        #: (key, name) → the full summary of one definition of an outlined module
        self._expanded: dict[tuple[str, str], dict | None] = {}
        self.layout = layout
        self._load = load
        self._load_outline = outline or load
        #: key → what the module defines, for modules not (yet) summarised in full
        self._outlines: dict[str, dict | None] = {}
        self._display = display
        # A module is known by its file's absolute path (its *key*): two projects linted together
        # may both have a top-level `layers.py`, and each script imports its own.
        self._summaries: dict[str, dict | None] = {}
        #: key → dotted module name (for relative imports), None for a script outside packages
        self._names: dict[str, str | None] = {}
        #: (module, function key) → its call sites; named file → the project calls it makes
        self._sites: dict[tuple[str, str], list[CallSite]] = {}
        self._file_calls: dict[tuple[str, str], list] = {}
        #: the bytes of the files named for linting, by key
        self._named_bytes: dict[str, bytes] = {}
        self._named_digest: str | None = None
        self._named_changes: dict[str, tuple[frozenset[str], frozenset[str]] | None] = {}
        #: the names a file calls (None: not known), for files named since a cached result or no longer
        self._called: dict[str, set[str] | None] = {}
        #: name → the named files whose bytes mention it (see :meth:`_candidates`)
        self._mentions: dict[str, list[str]] = {}
        #: names called by the named files linted again in this run (see :meth:`fresh`)
        self._changed_names: set[str] = set()
        self._content_digests: dict[str, str] = {}
        self._digests: dict[str, str] = {}
        self._finds: dict[tuple[str, str], str | None] = {}
        self._indexing = False
        #: the keys of the files named for linting (the others are only imported)
        self._named: set[str] = set()
        #: file key → hash of the decoded source CPython compiled cleanly while summarising
        self._compiled: dict[str, int] = {}
        #: the modules the current file's analysis read (for the cache), with how much of each:
        #: "o" (its outline: what it defines) or "f" (its full summary)
        self.reads: dict[str, str] = {}

    # -- files and modules -------------------------------------------------------------------------
    def register(self, path: Path) -> str:
        """Make a file named for linting part of the project (summarised when a question, or
        linting it, needs its summary); returns its key."""
        key = str(Path(path).absolute())
        if key not in self._names:
            self._names[key] = self.layout.module_name(Path(key))
        self._named.add(key)
        return key

    def mark_compiled(self, path: Path, source_hash: int) -> None:
        self._compiled[str(Path(path).absolute())] = source_hash

    def compiled(self, path: str, source: str) -> bool:
        """Did summarising compile exactly this source of ``path`` without a problem?"""
        expected = self._compiled.get(str(Path(path).absolute()))
        return expected is not None and expected == hash(source)

    def module_of(self, path: str | Path) -> str | None:
        """The key of a file of the project, or None."""
        key = str(Path(path).absolute())
        return key if key in self._names else None

    def summary(self, key: str) -> dict | None:
        if key not in self._summaries:
            self._summaries[key] = self._load(Path(key))
        return self._summaries[key]

    def digest(self, key: str, level: str = "f") -> str:
        """What the cached results of a module's dependents are checked against: the content
        of the module's file (whatever was read of it: outline, definitions or summary, all
        follow from the content), or for ``c`` (``key`` is ``@calls:<name>``) the contents of
        every named file that may call ``<name>``."""
        memo = (key, level)
        digest = self._digests.get(memo)  # type: ignore[arg-type]
        if digest is None:
            if level == "c":
                candidates = self._candidates(key[len("@calls:"):])
                if len(candidates) > _MAX_CALLER_STAMP:
                    # a common name: stale when a file linted again calls it, or when the
                    # named files are others (see fresh())
                    digest = "m:"
                else:
                    digest = "c:" + "|".join(f"{k}={self._content_digest(k)}" for k in candidates)
            else:
                digest = f"{level}:{self._content_digest(key)}"
            self._digests[memo] = digest  # type: ignore[index]
        return digest

    def _content_digest(self, key: str) -> str:
        found = self._content_digests.get(key)
        if found is None:
            found = self._content_digests[key] = self._compute_content_digest(key)
        return found

    def _compute_content_digest(self, key: str) -> str:
        data = self._named_bytes.get(key)
        if data is not None:
            from torch_audit.lint.cache import content_hash

            return content_hash(data)
        if self._store is not None:
            return self._store.content_digest(Path(key))
        from torch_audit.lint.project.summary import summary_digest

        return summary_digest(self.summary(key))

    def stamps(self, exclude: str | None = None) -> dict[str, str]:
        """The digests of what the current file's analysis read, at the level it read them; with
        a search for callers, also which files were named (see :meth:`fresh`)."""
        out = {k: self.digest(k, level) for k, level in sorted(self.reads.items()) if k != exclude}
        if any(k.startswith("@calls:") for k in out):
            out[_NAMED] = "n:" + self.named_digest()
        return out

    def named_digest(self) -> str:
        """A digest of the set of named files (the files callers are looked for in); the set
        itself is kept in the cache under it, so that a later run can tell which files are new."""
        if self._named_digest is None:
            keys = sorted(self._named_bytes)
            self._named_digest = _names_digest(keys)
            if self._store is not None:
                self._store.remember_named(self._named_digest, keys)
        return self._named_digest

    def fresh(self, stamps: dict[str, str]) -> bool:
        """Are the modules a cached result read still the same?

        For the callers of a name (``@calls:<name>``) this is checked without resolving any call
        again: none of the files linted again in this run (the changed ones,
        :meth:`note_changed`) may call it, the files stamped as its possible callers must be
        unchanged, and when the named files are not the same as then, none of the files named
        now and not then may mention it (nor, for a common name stamped without its callers'
        list, may a file have left). A caller that stops calling needs no stamp of its own: a
        result that rested on its call read the caller's code, and that read is stamped."""
        added: frozenset[str] = frozenset()
        removed: frozenset[str] = frozenset()
        named = stamps.get(_NAMED)
        if named is not None and named != "n:" + self.named_digest():
            change = self._named_change(named[2:])
            if change is None:
                return False  # which files were named then is not known
            added, removed = change
        for key, stamp in stamps.items():
            level, _, value = stamp.partition(":")
            if level in ("c", "m"):
                name = key[len("@calls:"):]
                if name in self._changed_names:
                    return False
                if added and self._may_call(name, added):
                    return False  # a file named for the first time may call it
                if level == "m":
                    if removed and self._may_call(name, removed, named=False):
                        return False  # a file named then and not now may have called it
                    continue
                for pair in filter(None, value.split("|")):
                    k, _, digest = pair.rpartition("=")
                    if k not in self._named_bytes or self._content_digest(k) != digest:
                        return False
            elif level == "n":
                continue
            elif self.digest(key, level if level in ("o", "d", "f") else "f") != stamp:
                return False
        return True

    def _named_change(self, digest: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """The files named now and not under ``digest``, and those named then and not now
        (None when the cache no longer knows that set)."""
        if digest not in self._named_changes:
            before = self._store.named_files(digest) if self._store is not None else None
            self._named_changes[digest] = None if before is None else (
                frozenset(self._named_bytes.keys() - set(before)),
                frozenset(set(before) - self._named_bytes.keys()),
            )
        return self._named_changes[digest]

    def _may_call(self, name: str, keys: frozenset[str], named: bool = True) -> bool:
        """May one of the files ``keys`` (named now, or only then) call ``name``? By the names
        their summaries call; with too many files, by which named files mention it, and for
        files no longer named, yes (a file that is gone may have)."""
        if len(keys) > _MAX_CALLER_STAMP:
            return not named or any(k in keys for k in self._candidates(name))
        for key in keys:
            if key not in self._called:
                summary = self.summary(key)
                self._called[key] = _called_names(summary) if summary is not None else None
            called = self._called[key]
            if called is None or name in called:
                return True
        return False

    def note_changed(self, paths: Iterable[Path]) -> None:
        """The named files linted again in this run: the names they call may have new callers."""
        for path in paths:
            summary = self.summary(str(Path(path).absolute()))
            if summary is not None:
                self._changed_names.update(_called_names(summary))

    def add_script(self, path: str | Path, source: str) -> str:
        """Make a file the project did not discover (a notebook's code) part of it."""
        from torch_audit.lint.project.summary import summarize_source

        key = str(Path(path).absolute())
        if key not in self._names:
            self._names[key] = None
            self._summaries[key] = summarize_source(source)
        return key

    def path_of(self, key: str) -> str:
        return self._display(Path(key))

    def _read(self, key: str) -> dict | None:
        """A module's full summary (its functions' bodies included)."""
        if self._indexing and key not in self._summaries and key not in self._named:
            return None  # while indexing calls, modules outside the named files are not read
        self.reads[key] = "f"
        return self.summary(key)

    def _outline(self, key: str) -> dict | None:
        if key in self._summaries:
            return self._summaries[key]
        if key not in self._outlines:
            self._outlines[key] = self._load_outline(Path(key))
        return self._outlines[key]

    def _read_outline(self, key: str) -> dict | None:
        """What a module defines: its full summary when known, else its outline (resolving a
        name needs no function body, and most imported modules are only named, never run)."""
        if self._indexing and key not in self._summaries and key not in self._named:
            return None
        self.reads.setdefault(key, "o")
        return self._outline(key)

    def full(self, hit: tuple[str, Any, str]) -> tuple[str, Any, str]:
        """A :meth:`resolve` result with the full definition (bodies included)."""
        kind, found, key = hit
        if not isinstance(found, dict) or not found.get("outline"):
            return hit
        if kind == "function":
            name = f"{found['cls']}.{found['name']}" if found.get("cls") else found["name"]
            full = self._function(key, name)
        elif kind == "class":
            full = self._class(key, found["name"])
        else:
            return hit
        return (kind, full, key) if full is not None else hit

    # -- names ----------------------------------------------------------------------------------------
    def absolute(self, key: str, name: str) -> str | None:
        """A possibly relative dotted name as written in the module ``key`` → an absolute one."""
        if not name.startswith("."):
            return name
        module = self._names.get(key)
        if module is None:
            return None  # a relative import outside a package fails in Python too
        level = len(name) - len(name.lstrip("."))
        rest = name[level:]
        is_package = key.endswith("__init__.py")
        parts = module.split(".")
        keep = len(parts) - level + (1 if is_package else 0)
        if keep <= 0:
            return None
        base = parts[:keep]
        return ".".join([*base, rest] if rest else base)

    def find(self, module: str, near: str) -> str | None:
        """The key of the project module ``module`` as imported from the file ``near``."""
        memo = (module, near)
        if memo in self._finds:
            return self._finds[memo]
        from torch_audit.lint.project.layout import package_root

        path = self.layout.find(module, package_root(Path(near).parent))
        if path is None:
            self._finds[memo] = None
            return None
        key = str(path)
        self._finds[memo] = key
        if key not in self._names:
            self._names[key] = self.layout.module_name(path) or module
        return key

    def resolve(self, key: str, dotted: str, depth: int = 0) -> tuple[str, Any, str] | None:
        """What ``dotted`` (as written in the module ``key``) is: ``("function", summary,
        key)``, ``("class", summary, key)``, ``("value", def, key)``, ``("module", None, key)``,
        ``("external", None, qualname)``, or None when unknown."""
        if depth > 8:
            return None
        summary = self._read_outline(key)
        if summary is None:
            return None
        head, _, rest = dotted.partition(".")
        found = summary["defs"].get(head)
        if found is not None:
            kind = found.get("kind")
            if kind == "class":
                if not rest:
                    return ("class", dict(found, name=head), key)
                method = found["methods"].get(rest)
                return ("function", dict(method, cls=head), key) if method is not None else None
            if rest:
                return None
            if kind == "value":
                return ("value", dict(found, name=head), key)
            return ("function", dict(found, name=head), key)
        target = summary["imports"].get(head)
        if target is not None:
            absolute = self.absolute(key, target)
            if absolute is None:
                return None
            return self.resolve_qualified(f"{absolute}.{rest}" if rest else absolute, key, depth + 1)
        for star in summary["stars"]:
            absolute = self.absolute(key, star)
            star_key = self.find(absolute, key) if absolute else None
            if star_key is None:
                continue
            hit = self.resolve(star_key, dotted, depth + 1)
            if hit is not None:
                return hit
        return None

    def resolve_qualified(self, qualname: str, near: str, depth: int = 0) -> tuple[str, Any, str] | None:
        """An absolute dotted name imported in the file ``near``: the longest prefix that is a
        project module, then names inside it; ``external`` when no prefix is."""
        parts = qualname.split(".")
        for i in range(len(parts), 0, -1):
            key = self.find(".".join(parts[:i]), near)
            if key is None:
                continue
            rest = ".".join(parts[i:])
            if not rest:
                return ("module", None, key)
            return self.resolve(key, rest, depth + 1)
        return ("external", None, canonical(qualname))


    # -- classes ----------------------------------------------------------------------------------------
    def class_bases(self, module: str, cls: dict, depth: int = 0) -> list[tuple[str, Any, str] | None]:
        return [self.resolve(module, b, depth + 1) if b else None for b in cls.get("bases", [])]

    def is_module_class(self, module: str, cls: dict, is_torch_base: Callable[[str], bool], depth: int = 0) -> bool:
        """Does a project class derive (across files) from a torch module class?"""
        if depth > 8:
            return False
        for base in self.class_bases(module, cls, depth):
            if base is None:
                continue
            kind, found, where = base
            if kind == "external" and is_torch_base(where):
                return True
            if kind == "class" and self.is_module_class(where, found, is_torch_base, depth + 1):
                return True
        return False

    def class_method(self, module: str, cls: dict, name: str, depth: int = 0) -> tuple[dict, str, str] | None:
        """A method of a project class or of its project bases: (method, class name, module)."""
        if depth > 8:
            return None
        if cls.get("outline"):
            cls = self._class(module, cls["name"]) or cls
        method = cls["methods"].get(name)
        if method is not None:
            return method, cls["name"], module
        for base in self.class_bases(module, cls, depth):
            if base is not None and base[0] == "class":
                hit = self.class_method(base[2], base[1], name, depth + 1)
                if hit is not None:
                    return hit
        return None

    def class_attr(self, module: str, cls: dict, attr: str, depth: int = 0) -> tuple[list, str, dict] | None:
        """``self.<attr>`` assignments of a project class or its project bases."""
        if depth > 8:
            return None
        if cls.get("outline"):
            cls = self._class(module, cls["name"]) or cls
        entries = cls.get("attrs", {}).get(attr)
        if entries:
            return entries, module, cls
        for base in self.class_bases(module, cls, depth):
            if base is not None and base[0] == "class":
                hit = self.class_attr(base[2], base[1], attr, depth + 1)
                if hit is not None:
                    return hit
        return None

    # -- objects: what a value is -------------------------------------------------------------------------
    def objects(self, value: Value, frame: Frame, depth: int = 0) -> list[Obj]:
        if depth > _MAX_DEPTH:
            return [UNKNOWN_OBJ]
        tag = value[0]
        if tag == "call":
            return self._call_objects(value, frame, depth)
        if tag == "name":
            return self._name_objects(frame.module, value[1], depth)
        if tag == "loc":
            return self._flat(self.objects(v, frame, depth + 1) for v in self._reaching(frame, value[1], value[2]))
        if tag == "param":
            bound = (frame.bindings or {}).get(value[1])
            if bound is None:
                return [UNKNOWN_OBJ]
            arg, caller = bound
            return self.objects(arg, caller, depth + 1)
        if tag == "self":
            return self._self_objects(frame, value[1], depth)
        if tag == "either":
            return self._flat(self.objects(v, frame, depth + 1) for v in value[1])
        return [UNKNOWN_OBJ]

    def _self_objects(self, frame: Frame, attr: str, depth: int) -> list[Obj]:
        if frame.cls is None:
            return [UNKNOWN_OBJ]
        owner = frame.self_obj
        if owner is not None and owner.kind == "instance":
            module, cls = owner.module, self._class(owner.module, owner.name)
        else:
            module, cls = frame.module, self._class(frame.module, frame.cls)
        if cls is None or module is None:
            return [UNKNOWN_OBJ]
        hit = self.class_attr(module, cls, attr)
        if hit is None:
            return [UNKNOWN_OBJ]
        entries, where, owner_cls = hit
        if len(entries) != 1:
            return [UNKNOWN_OBJ]
        method_name, _line, assigned = entries[0]
        method = owner_cls["methods"].get(method_name)
        if method is None:
            return [UNKNOWN_OBJ]
        bindings = None
        if method_name == "__init__" and owner is not None and owner.kind == "instance":
            bindings = self._bind(method, owner.args, owner.kwargs, owner.frame, skip_self=True)
        inner = Frame(where, method, owner_cls["name"], bindings, owner)
        return self.objects(assigned, inner, depth + 1)

    def _name_objects(self, module: str, dotted: str, depth: int) -> list[Obj]:
        hit = self.resolve(module, dotted)
        if hit is None:
            return [UNKNOWN_OBJ]
        kind, found, where = hit
        if kind == "value":
            frame = Frame(where, self._read(where)["body"])  # type: ignore[index]
            return self.objects(found["value"], frame, depth + 1)
        if kind == "class":
            return [Obj("class", found["name"], where, evidence=Evidence(self.path_of(where), found["line"], found["name"]))]
        if kind == "function":
            return [Obj("function", _function_key(found), where)]
        if kind == "external":
            return [Obj("external", where)]
        return [UNKNOWN_OBJ]

    def _call_objects(self, value: Value, frame: Frame, depth: int) -> list[Obj]:
        _, func, args, kwargs, line = value
        if func[0] == "attr" and func[2] in MODULE_SELF_METHODS:
            # model.to(device), Net().cuda().eval(): the same module
            inner = self.objects(func[1], frame, depth + 1)
            if all(o.kind in ("instance", "torch") for o in inner):
                return inner
            return [UNKNOWN_OBJ]
        out: list[Obj] = []
        for callee in self.objects(func, frame, depth + 1):
            if callee.kind == "external" and callee.name:
                out.append(Obj("torch", callee.name, None, args, kwargs, frame,
                               Evidence(self.path_of(frame.module), line, frame.label)))
            elif callee.kind == "class":
                out.append(Obj("instance", callee.name, callee.module, args, kwargs, frame,
                               Evidence(self.path_of(frame.module), line, f"{callee.name}(...)")))
            elif callee.kind == "function":
                fn = self._function(callee.module, callee.name)
                if fn is None:
                    out.append(UNKNOWN_OBJ)
                    continue
                inner = Frame(callee.module, fn, fn.get("cls"), self._bind(fn, args, kwargs, frame))
                returns = fn.get("returns") or []
                if not returns:
                    out.append(UNKNOWN_OBJ)
                for r in returns:
                    out.extend(self.objects(r, inner, depth + 1))
            else:
                out.append(UNKNOWN_OBJ)
        return out or [UNKNOWN_OBJ]

    # -- sources: what produced a value ---------------------------------------------------------------
    def sources(self, value: Value, frame: Frame, depth: int = 0, element: Any = None) -> list[Src]:
        if depth > _MAX_DEPTH:
            return [UNKNOWN_SRC]
        tag = value[0]
        if tag == "lit":
            return [Src("literal")]
        if tag == "call":
            return self._call_sources(value, frame, depth, element)
        if tag == "loc":
            return self._flat(self.sources(v, frame, depth + 1, element) for v in self._reaching(frame, value[1], value[2]))
        if tag == "param":
            bound = (frame.bindings or {}).get(value[1])
            if bound is None:
                return [UNKNOWN_SRC]
            return self.sources(bound[0], bound[1], depth + 1, element)
        if tag == "tuple" and isinstance(element, int):
            items = value[1]
            if 0 <= element < len(items) and not any(i == ["*"] for i in items[: element + 1]):
                return self.sources(items[element], frame, depth + 1)
            return [UNKNOWN_SRC]
        if tag == "sub":
            index = value[2]
            if isinstance(index, int) and element is None:
                return self.sources(value[1], frame, depth + 1, index)
            return self.sources(value[1], frame, depth + 1)
        if tag == "either":
            return self._flat(self.sources(v, frame, depth + 1, element) for v in value[1])
        if tag == "binop":
            operands = tuple(self._flat(self.sources(o, frame, depth + 1) for o in (value[2] if len(value) > 2 else [])))
            return [Src("call", ARITHMETIC, None, Evidence(self.path_of(frame.module), value[1], frame.label), operands=operands)]
        return [UNKNOWN_SRC]

    def _call_sources(self, value: Value, frame: Frame, depth: int, element: Any) -> list[Src]:
        _, func, args, kwargs, line = value
        evidence = Evidence(self.path_of(frame.module), line, frame.label)
        if func[0] == "attr":
            method = func[2]
            if method in TRANSPARENT_METHODS:
                return self.sources(func[1], frame, depth + 1, element)
            if method in ("forward", "__call__"):
                return self.apply_all(self.objects(func[1], frame, depth + 1), depth, element)
            receiver = self.objects(func[1], frame, depth + 1)
            if len(receiver) == 1 and receiver[0].kind == "instance":
                # a method of a project object
                return self._method_sources(receiver[0], method, args, kwargs, frame, depth, element)
            if all(o.kind == "unknown" for o in receiver):
                return [Src("call", None, method, evidence)]
            return [UNKNOWN_SRC]
        if func[0] == "self":
            objs = self.objects(func, frame, depth + 1)
            if objs != [UNKNOWN_OBJ]:
                return self.apply_all(objs, depth, element)
            # self.helper(...): a method of the class
            cls = self._class(frame.module, frame.cls) if frame.cls else None
            if cls is not None:
                hit = self.class_method(frame.module, cls, func[1])
                if hit is not None and not self.class_attr(frame.module, cls, func[1]):
                    method, cls_name, where = hit
                    inner = Frame(where, method, cls_name, self._bind(method, args, kwargs, frame, skip_self=True), frame.self_obj)
                    return self._return_sources(inner, depth, element)
            return [UNKNOWN_SRC]
        out: list[Src] = []
        for callee in self.objects(func, frame, depth + 1):
            if callee.kind == "external" and callee.name:
                out.append(Src("call", callee.name, _last(callee.name), evidence))
            elif callee.kind == "function":
                fn = self._function(callee.module, callee.name)
                if fn is None:
                    out.append(UNKNOWN_SRC)
                    continue
                inner = Frame(callee.module, fn, fn.get("cls"), self._bind(fn, args, kwargs, frame))
                out.extend(self._return_sources(inner, depth, element))
            elif callee.kind == "class":
                out.append(Src("call", None, None, evidence, Obj("instance", callee.name, callee.module, args, kwargs, frame, evidence)))
            elif callee.kind in ("instance", "torch"):
                out.extend(self.apply(callee, depth + 1, element))
            else:
                out.append(UNKNOWN_SRC)
        return out or [UNKNOWN_SRC]

    def _method_sources(self, obj: Obj, method: str, args, kwargs, frame: Frame, depth: int, element) -> list[Src]:
        cls = self._class(obj.module, obj.name)
        if cls is None or obj.module is None:
            return [UNKNOWN_SRC]
        hit = self.class_method(obj.module, cls, method)
        if hit is None:
            return [UNKNOWN_SRC]
        fn, cls_name, where = hit
        inner = Frame(where, fn, cls_name, self._bind(fn, args, kwargs, frame, skip_self=True), obj)
        return self._return_sources(inner, depth, element)

    def apply_all(self, objs: list[Obj], depth: int, element: Any) -> list[Src]:
        return self._flat(self.apply(o, depth + 1, element) for o in objs)

    def apply(self, obj: Obj, depth: int = 0, element: Any = None) -> list[Src]:
        """Sources of the output of calling the module object ``obj``."""
        if depth > _MAX_DEPTH:
            return [UNKNOWN_SRC]
        if obj.kind == "torch":
            if obj.name == "torch.nn.Sequential":
                layers = [a for a in obj.args]
                if not layers or any(a == ["*"] for a in layers) or obj.frame is None:
                    return [UNKNOWN_SRC]
                return self._flat(self.apply(o, depth + 1, element) for o in self.objects(layers[-1], obj.frame, depth + 1))
            return [Src("module", obj.name, None, obj.evidence, obj)]
        if obj.kind == "instance":
            cls = self._class(obj.module, obj.name)
            if cls is None or obj.module is None:
                return [UNKNOWN_SRC]
            hit = self.class_method(obj.module, cls, "forward")
            if hit is None:
                return [UNKNOWN_SRC]
            fn, cls_name, where = hit
            return self._return_sources(Frame(where, fn, cls_name, None, obj), depth, element)
        return [UNKNOWN_SRC]

    def _return_sources(self, frame: Frame, depth: int, element: Any) -> list[Src]:
        returns = frame.fn.get("returns") or []
        if not returns:
            return [UNKNOWN_SRC]
        return self._flat(self.sources(r, frame, depth + 1, element) for r in returns)

    # -- binding ----------------------------------------------------------------------------------------
    def _bind(self, fn: dict, args: list, kwargs: dict, caller: Frame | None, skip_self: bool = False) -> dict | None:
        if caller is None:
            return None
        params = list(fn.get("params", []))
        if skip_self or fn.get("cls"):
            params = params[1:] if params and fn.get("kind", "") != "static" else params
        out: dict[str, tuple[Value, Frame]] = {}
        for name, arg in zip(params, args):
            if arg == ["*"]:
                break
            out[name] = (arg, caller)
        for name, arg in kwargs.items():
            if name in params:
                out[name] = (arg, caller)
        for name, default in fn.get("defaults", {}).items():
            out.setdefault(name, (default, caller))
        return out

    def _reaching(self, frame: Frame, name: str, line: int) -> list[Value]:
        """The value of a local variable at ``line``: its last assignment before it (source order)."""
        entries = frame.fn.get("locals", {}).get(name) or []
        best = None
        for entry_line, value in entries:
            if entry_line < line or (entry_line == line and value[0] != "binop"):
                if best is None or entry_line >= best[0]:
                    best = (entry_line, value)
        if best is None:
            return [UNKNOWN]
        return [best[1]]

    # -- lookups ------------------------------------------------------------------------------------------
    def _definition(self, module: str, name: str) -> dict | None:
        """One top-level definition of a module in full: from its summary when it has one,
        else summarised alone from its outline's tree."""
        if module in self._summaries or self._store is None or module in self._named:
            summary = self._read(module)
            return summary["defs"].get(name) if summary is not None else None
        outline = self._read_outline(module)
        if outline is None:
            return None
        memo = (module, name)
        if memo not in self._expanded:
            found = outline["defs"].get(name)
            if found is None or found.get("kind") == "value":
                self._expanded[memo] = found
            else:
                expanded = self._store.expand(Path(module), name)
                self._expanded[memo] = expanded if expanded is not None else found
        if self.reads.get(module) != "f":
            self.reads[module] = "d"
        return self._expanded[memo]

    def _class(self, module: str | None, name: str | None) -> dict | None:
        if module is None or name is None:
            return None
        if module not in self._summaries and module not in self._named and self._store is not None:
            found = self._definition(module, name)
            if found is None or found.get("kind") != "class":
                return None
            return dict(found, name=name)
        summary = self._read(module)
        if summary is None:
            return None
        found = summary["defs"].get(name)
        if found is None or found.get("kind") != "class":
            return None
        return dict(found, name=name)

    def _function(self, module: str | None, key: str | None) -> dict | None:
        if module is None or key is None:
            return None
        if self._read_outline(module) is None:
            return None
        cls_name, _, name = key.rpartition(".")
        if cls_name:
            cls = self._class(module, cls_name)
            if cls is None:
                return None
            method = cls["methods"].get(name)
            return dict(method, cls=cls_name) if method is not None else None
        found = self._definition(module, name)
        if found is None or found.get("kind") == "class" or found.get("kind") == "value":
            return None
        return dict(found, name=name)

    @staticmethod
    def _flat(groups: Iterator[list]) -> list:
        out: list = []
        for g in groups:
            out.extend(g)
        return out

    # -- callers -----------------------------------------------------------------------------------------
    def set_named(self, contents: dict[str, bytes]) -> None:
        """The bytes of every file named for linting, by key: callers are looked for there."""
        self._named_bytes = contents
        self._mentions.clear()
        self._named_digest = None
        self._named_changes.clear()
        self._named.update(contents)

    def _candidates(self, name: str) -> list[str]:
        """Named files that may call ``name`` (their bytes mention it)."""
        found = self._mentions.get(name)
        if found is None:
            word = name.encode("utf-8", "surrogateescape")
            found = self._mentions[name] = sorted(k for k, data in self._named_bytes.items() if word in data)
        return found

    def call_sites(self, module: str, key: str) -> list[CallSite]:
        """Calls of the project function ``key`` (``name`` or ``Class.method``; ``Class`` for
        its constructions) of ``module``, in the files named for linting. Only files whose bytes
        mention the name can call it by name, so only those are summarised and read; the
        answer depends on the named files alone, whatever order a worker lints them in."""
        memo = (module, key)
        if memo not in self._sites:
            name = key.rpartition(".")[2]
            sites: list[CallSite] = []
            for caller in self._candidates(name):
                sites.extend(site for target, site in self._calls_of(caller, name) if target == memo)
            self._sites[memo] = sites
        self.reads[module] = "f"
        self.reads["@calls:" + key.rpartition(".")[2]] = "c"
        return self._sites[memo]

    def _calls_of(self, module: str, name: str) -> list[tuple[tuple[str, str], CallSite]]:
        """The calls a named file makes that may reach a project function or class called
        ``name``, with their targets.

        Only calls written with that name (``name(...)``, ``m.name(...)``, ``self.name(...)``)
        or with a name this file imports it as are resolved: resolving every call of a file
        outlines every module it imports, most of them for calls that cannot be the one asked
        about. Resolving a call may not summarise a module nobody named (a library's
        `modeling_utils.py` would be summarised for nothing)."""
        memo = (module, name)
        if memo in self._file_calls:
            return self._file_calls[memo]
        out: list[tuple[tuple[str, str], CallSite]] = []
        summary = self.summary(module)
        self._file_calls[memo] = out
        if summary is None:
            return out
        written = {name}
        for alias, target in summary["imports"].items():
            if target.rpartition(".")[2] == name:
                written.add(alias)
        reads = dict(self.reads)
        self._indexing = True
        try:
            frames = [Frame(module, summary["body"])] if summary.get("body") else []
            for name, d in summary["defs"].items():
                if d.get("kind") == "class":
                    frames.extend(Frame(module, dict(m, cls=name), name) for m in d["methods"].values())
                elif d.get("kind") != "value":
                    frames.append(Frame(module, dict(d, name=name)))
            for frame in frames:
                for call, line, loops, branches, grad in frame.fn.get("calls", []):
                    func = call[1]
                    if func[0] not in ("name", "self") or func[1].rpartition(".")[2] not in written:
                        continue
                    target = self._call_target(call, frame)
                    if target is not None:
                        out.append((target, CallSite(call, frame, self.path_of(module), line, loops, branches, grad)))
        finally:
            self._indexing = False
            self.reads = reads  # what indexing touched is covered by the `@calls:` stamp
        return out

    def _call_target(self, call: Value, frame: Frame) -> tuple[str, str] | None:
        func = call[1]
        if func[0] == "name":
            hit = self.resolve(frame.module, func[1])
            if hit is None:
                return None
            kind, found, where = hit
            if kind == "function":
                return (where, _function_key(found))
            if kind == "class":
                return (where, found["name"])
            return None
        if func[0] == "self" and frame.cls is not None:
            cls = self._class(frame.module, frame.cls)
            if cls is None or self.class_attr(frame.module, cls, func[1]):
                return None
            hit = self.class_method(frame.module, cls, func[1])
            if hit is None:
                return None
            _, cls_name, where = hit
            return (where, f"{cls_name}.{func[1]}")
        return None

    def parameter_sources(self, module: str, key: str, param: str, element: Any = None) -> list[tuple[Src, CallSite]]:
        """The sources of what call sites pass for ``param`` of function ``key``."""
        out: list[tuple[Src, CallSite]] = []
        fn = self._function(module, key)
        if fn is None:
            return out
        for site in self.call_sites(module, key)[:_MAX_CALL_SITES]:
            bound = self._bind(fn, site.call[2], site.call[3], site.frame)
            if not bound or param not in bound:
                continue
            arg, caller = bound[param]
            for s in self.sources(arg, caller, 1, element):
                out.append((s, site))
        return out

    def parameter_objects(self, module: str, key: str, param: str) -> list[tuple[Obj, CallSite]]:
        """The objects that call sites pass for ``param`` of ``key`` (for ``__init__``, the
        constructions of the class)."""
        out: list[tuple[Obj, CallSite]] = []
        fn = self._function(module, key)
        if fn is None:
            return out
        cls_name, _, name = key.rpartition(".")
        sites = self.call_sites(module, cls_name if name == "__init__" else key)
        for site in sites[:_MAX_CALL_SITES]:
            bound = self._bind(fn, site.call[2], site.call[3], site.frame, skip_self=bool(cls_name))
            if not bound or param not in bound:
                continue
            arg, caller = bound[param]
            for o in self.objects(arg, caller, 1):
                out.append((o, site))
        return out

    # -- events ------------------------------------------------------------------------------------------
    def function_effects(self, module: str, key: str, depth: int = 3, _seen: frozenset = frozenset()) -> list[RemoteEvent]:
        """Training events of a project function, its helpers' included (``depth`` levels),
        with subjects relative to the function's own parameters."""
        fn = self._function(module, key)
        if fn is None or (module, key) in _seen:
            return []
        seen = _seen | {(module, key)}
        frame = Frame(module, fn, fn.get("cls"))
        path = self.path_of(module)
        items: list[tuple[int, int, RemoteEvent]] = []
        for order, e in enumerate(fn.get("events", [])):
            subject = _subject_path(e["s"], fn)
            items.append((e["l"], order, RemoteEvent(
                e["k"], subject, e["loops"], e["br"], e.get("grad"), Evidence(path, e["l"], frame.label), e)))
        if depth > 0:
            for order, (call, line, loops, branches, grad) in enumerate(fn.get("calls", [])):
                target = self._call_target(call, frame)
                if target is None or target[1].rpartition(".")[2] == target[1] and self._class(*target):
                    continue
                inner_fn = self._function(*target)
                if inner_fn is None:
                    continue
                for ev in self.function_effects(target[0], target[1], depth - 1, seen):
                    mapped = _map_subject(ev.subject, inner_fn, call, fn)
                    items.append((line, 10_000 + order, dataclasses.replace(
                        ev,
                        subject=mapped,
                        loops=ev.loops + loops,
                        branches=ev.branches + branches,
                        grad=ev.grad if ev.grad is not None else grad,
                    )))
        items.sort(key=lambda t: (t[0], t[1]))
        return [e for _, _, e in items]


def render(value: Value, depth: int = 0) -> str:
    """Short source-like text of a summary value (``fit(Net(), loader)``), for messages."""
    tag = value[0]
    if depth > 3:
        return "…"
    if tag in ("name", "param"):
        return value[1]
    if tag == "loc":
        return value[1]
    if tag == "self":
        return f"self.{value[1]}"
    if tag == "lit":
        return repr(value[1])
    if tag == "attr":
        return f"{render(value[1], depth + 1)}.{value[2]}"
    if tag == "call":
        parts = [render(a, depth + 1) if a != ["*"] else "*…" for a in value[2]]
        parts += [f"{k}={render(v, depth + 1)}" for k, v in value[3].items() if k != "**"]
        inner = ", ".join(parts)
        if len(inner) > 40:
            inner = "…"
        return f"{render(value[1], depth + 1)}({inner})"
    return "…"


def describe_site(site: CallSite) -> str:
    """``fit(Net(), loader) at train.py:31``."""
    return f"`{render(site.call)}` in {site.path}:{site.line}"


def _function_key(found: dict) -> str:
    return f"{found['cls']}.{found['name']}" if found.get("cls") else found["name"]


def _last(qualname: str) -> str:
    return qualname.rsplit(".", 1)[-1]


def _literal_of(value: Value, frame: Frame | None, depth: int = 0) -> tuple[bool, Any]:
    if depth > 6:
        return False, None
    if value[0] == "lit":
        return True, value[1]
    if value[0] == "param" and frame is not None and frame.bindings and value[1] in frame.bindings:
        arg, caller = frame.bindings[value[1]]
        return _literal_of(arg, caller, depth + 1)
    return False, None


def _subject_path(value: Value, fn: dict) -> tuple | None:
    """An event's subject relative to its function: a parameter, ``self`` or a global."""
    rest: list[str] = []
    v = value
    while v[0] == "attr":
        rest.append(v[2])
        v = v[1]
    suffix = "".join(f".{r}" for r in reversed(rest))
    if v[0] == "param":
        if fn.get("cls") and fn.get("params") and v[1] == fn["params"][0]:
            return ("self", suffix)
        return ("param", v[1], suffix)
    if v[0] == "self":
        return ("self", f".{v[1]}{suffix}")
    if v[0] == "name":
        return ("global", v[1] + suffix)
    return None


def _map_subject(subject: tuple | None, callee: dict, call: Value, caller: dict) -> tuple | None:
    """A callee's event subject as the caller names it (through the call's arguments)."""
    if subject is None:
        return None
    if subject[0] == "global":
        return subject
    func = call[1]
    if subject[0] == "self":
        if func[0] == "self":
            return subject  # self.helper(): the same self
        if func[0] == "attr":
            receiver = _subject_path(func[1], caller)
            if receiver is None:
                return None
            return _append(receiver, subject[1])
        return None
    _, name, suffix = subject
    params = list(callee.get("params", []))
    if callee.get("cls"):
        params = params[1:]
    args, kwargs = call[2], call[3]
    arg = kwargs.get(name)
    if arg is None and name in params:
        i = params.index(name)
        if i < len(args) and args[i] != ["*"] and not any(a == ["*"] for a in args[:i]):
            arg = args[i]
    if arg is None:
        return None
    base = _subject_path(arg, caller)
    return _append(base, suffix) if base is not None else None


def _append(path: tuple, suffix: str) -> tuple:
    if path[0] == "param":
        return ("param", path[1], path[2] + suffix)
    return (path[0], path[1] + suffix)
