"""Questions of one file's facts that the project answers: the bridge to the whole-program model.

The per-file facts (dataflow, modules, training, inference) work on the libcst tree of the file
being linted. When a question reaches a boundary (a name imported from a local module, a
parameter of a function, ``self.x`` set from a constructor parameter, a helper defined in
another file) they ask here, and get answers in their own shape: :class:`Source` objects whose
``evidence`` says where in the project the fact was found (and ``via`` the call site it rests
on), and :class:`Event` stand-ins for helpers of other files.

Without a project (a file linted on its own from an API call, or a notebook cell), every method
answers None: "the code does not say", as before.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import libcst as cst

from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext
    from torch_audit.lint.facts.dataflow import Source
    from torch_audit.lint.facts.index import Call, Scope
    from torch_audit.lint.project.model import CallSite, Obj, Project, RemoteEvent, Src


def _is_torch_module_base(qualname: str) -> bool:
    from torch_audit.lint.facts.modules import MODULE_BASE_PREFIXES, MODULE_BASES

    return qualname.startswith(MODULE_BASE_PREFIXES) or qualname in MODULE_BASES


class CrossFile:
    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx
        self.project: Project | None = getattr(ctx, "project", None)
        self.module: str | None = self.project.module_of(ctx.path) if self.project is not None else None
        if self.project is not None and self.module is None:
            # a file the project did not discover (a notebook's code): it sees the project's
            # modules, and nobody calls into it
            self.module = self.project.add_script(ctx.path, ctx.source)
        self._resolved: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.project is not None

    # -- names ------------------------------------------------------------------------------------
    def resolve(self, qualname: str | None):
        """A qualified name as the file's imports give it → the project definition, or None."""
        if self.project is None or not qualname:
            return None
        if qualname in self._resolved:
            return self._resolved[qualname]
        hit = None
        absolute = self.project.absolute(self.module, qualname)  # type: ignore[arg-type]
        if absolute is not None:
            hit = self.project.resolve_qualified(absolute, self.module)  # type: ignore[arg-type]
            if hit is not None and hit[0] in ("external", "module"):
                hit = None
        self._resolved[qualname] = hit
        return hit

    def _frame(self, scope: "Scope | None" = None):
        from torch_audit.lint.project.model import Frame

        return Frame(self.module or "", {"name": scope.name if scope is not None else "<module>"})

    # -- values -------------------------------------------------------------------------------------
    def call_sources(self, qualname: str, call: cst.Call, scope: "Scope", element: Any = None) -> "list[Source] | None":
        """Sources of the result of calling a project function or class's instance."""
        hit = self.resolve(qualname)
        if hit is None:
            return None
        project = self.project
        assert project is not None
        hit = project.full(hit)
        kind, found, where = hit
        if kind == "function":
            return self._returns(hit, call, scope, element)
        if kind == "class":
            obj = self.instance(hit, call)
            from torch_audit.lint.facts.dataflow import Source

            return [Source("call", call, scope, None, None, name=found["name"], remote=obj)]
        return None

    def _returns(self, hit, call: cst.Call, scope: "Scope", element: Any = None) -> "list[Source]":
        """What a call of the project function ``hit`` returns, its parameters bound to the
        call's literal arguments."""
        from torch_audit.lint.project.model import Frame

        project = self.project
        assert project is not None
        _, fn, where = project.full(hit)
        args, kwargs = _local_arguments(call)
        inner = Frame(where, fn, fn.get("cls"), project._bind(fn, args, kwargs, self._frame(scope)))
        return [self.source(s) for s in project._return_sources(inner, 0, element)]

    def instance(self, hit, call: cst.Call | None) -> "Obj":
        from torch_audit.lint.project.model import Evidence, Obj

        kind, found, where = hit
        project = self.project
        assert project is not None
        args, kwargs = _local_arguments(call) if call is not None else ([], {})
        # where the class is defined (positions in this file cost a code-generation pass)
        return Obj("instance", found["name"], where, args, kwargs, self._frame(),
                   Evidence(project.path_of(where), found.get("line", 0), f"class {found['name']}"))

    def output(self, obj: "Obj", element: Any = None) -> "list[Source]":
        """Sources of the output of applying a project object (a module's ``forward``)."""
        assert self.project is not None
        return [self.source(s) for s in self.project.apply(obj, 0, element)]

    def function_sources(self, call: cst.Call, scope: "Scope") -> "list[Source] | None":
        """What a call of a project function (of this file or another) returns, or None when
        the callee is not a project function."""
        if self.project is None:
            return None
        func = call.func
        qualname = scope.qualname(func)
        if qualname is not None:
            hit = self.resolve(qualname)
        elif isinstance(func, cst.Name) and (scope.lookup_scope(func.value) or scope).kind == "module":
            hit = self.project.resolve(self.module, func.value)  # type: ignore[arg-type]
        else:
            return None
        if hit is None or hit[0] != "function":
            return None
        found = self._returns(hit, call, scope)
        return found if found and all(s.kind != "unknown" for s in found) else None

    def module_output(self, qualname: str, call: cst.Call, element: Any = None) -> "list[Source] | None":
        """``Classifier(...)`` built here from a class of another file, then applied."""
        hit = self.resolve(qualname)
        if hit is None or hit[0] != "class":
            return None
        return self.output(self.instance(hit, call), element)

    def imported_objects(self, name: str, scope: "Scope") -> "list[Source] | None":
        """What an imported project name is (``from pkg.losses import criterion``)."""
        qualname = scope.qualname(cst.Name(name))
        hit = self.resolve(qualname)
        if hit is None:
            return None
        assert self.project is not None
        if hit[0] == "value":
            from torch_audit.lint.project.model import Frame

            kind, found, where = hit
            summary = self.project.summary(where)
            if summary is None:
                return None
            objs = self.project.objects(found["value"], Frame(where, summary["body"]))
            return [self.object_source(o) for o in objs]
        return None

    def param_sources(self, scope: "Scope", name: str, element: Any = None, objects: bool = False) -> "list[Source] | None":
        """What the project's call sites pass for parameter ``name`` of the function ``scope``."""
        key = self.function_key(scope)
        if key is None or self.project is None:
            return None
        if objects:
            pairs = self.project.parameter_objects(self.module, key, name)  # type: ignore[arg-type]
            out = [dataclasses.replace(self.object_source(o), via=site) for o, site in pairs]
        else:
            pairs2 = self.project.parameter_sources(self.module, key, name, element)  # type: ignore[arg-type]
            out = [dataclasses.replace(self.source(s), via=site) for s, site in pairs2]
        return out or None

    def function_key(self, scope: "Scope") -> str | None:
        """``name`` of a module-level function, ``Class.name`` of a method of a top-level class."""
        if scope.kind != "function" or scope.parent is None:
            return None
        if scope.parent.kind == "module":
            return scope.name
        cls = scope.parent
        if cls.kind == "class" and cls.parent is not None and cls.parent.kind == "module":
            return f"{cls.name}.{scope.name}"
        return None

    # -- conversions ---------------------------------------------------------------------------------
    def source(self, src: "Src") -> "Source":
        from torch_audit.lint.facts.dataflow import UNKNOWN, Source

        if src.kind == "call":
            if src.obj is not None:
                return Source("call", None, None, None, None, remote=src.obj, evidence=src.evidence)
            if src.operands:
                return Source("call", None, None, src.qualname, src.method, evidence=src.evidence,
                              operands=tuple(self.source(o) for o in src.operands))
            return Source("call", None, None, src.qualname, src.method, evidence=src.evidence)
        if src.kind == "module":
            return Source("module", None, None, src.qualname, evidence=src.evidence, remote=src.obj)
        if src.kind == "literal":
            return Source("literal", None, None)
        return UNKNOWN

    def object_source(self, obj: "Obj") -> "Source":
        from torch_audit.lint.facts.dataflow import UNKNOWN, Source

        if obj.kind == "torch":
            return Source("call", None, None, obj.name, None, remote=obj, evidence=obj.evidence)
        if obj.kind == "instance":
            return Source("call", None, None, None, None, name=obj.name, remote=obj, evidence=obj.evidence)
        return UNKNOWN

    # -- classes --------------------------------------------------------------------------------------
    def is_module_class(self, qualname: str | None) -> bool:
        hit = self.resolve(qualname)
        if hit is None or hit[0] != "class" or self.project is None:
            return False
        return self.project.is_module_class(hit[2], hit[1], _is_torch_module_base)

    def obj_is_module(self, obj: "Obj") -> bool:
        if obj.kind == "torch":
            return bool(obj.name) and obj.name.startswith("torch.nn.")  # type: ignore[union-attr]
        if obj.kind == "instance" and self.project is not None:
            cls = self.project._class(obj.module, obj.name)
            return cls is not None and self.project.is_module_class(obj.module, cls, _is_torch_module_base)  # type: ignore[arg-type]
        return False

    def mode_dependent(self, obj: "Obj", mode_dependent_ctor, depth: int = 0, seen: set | None = None) -> bool | None:
        """Does a project object contain layers whose behaviour differs in eval mode?
        True, False, or None when its content is not fully known."""
        project = self.project
        if project is None or depth > 8:
            return None
        seen = seen if seen is not None else set()
        if obj.kind == "torch":
            return mode_dependent_ctor(obj.name, obj)
        if obj.kind != "instance" or obj.module is None:
            return None
        key = (obj.module, obj.name)
        if key in seen:
            return False
        seen.add(key)
        cls = project._class(obj.module, obj.name)
        if cls is None:
            return None
        unknown = False
        module, current = obj.module, cls
        chain = [(module, current)]
        for base in project.class_bases(module, current):
            if base is None:
                unknown = True
            elif base[0] == "class":
                chain.append((base[2], project._class(base[2], base[1]["name"]) or base[1]))
            elif base[0] == "external" and base[2] not in ("torch.nn.Module",):
                return None if not base[2].startswith("torch.nn.") else (True if mode_dependent_ctor(base[2], None) else None)
        from torch_audit.lint.project.model import Frame

        for where, c in chain:
            for method in c["methods"].values():
                for call, *_ in method.get("calls", []):
                    name = call[1][1] if call[1][0] == "name" else ""
                    if "dropout" in name.lower() or "batch_norm" in name.lower():
                        return True
            for attr, entries in c.get("attrs", {}).items():
                if attr == "training":
                    return True
                for method_name, _line, value in entries:
                    method = c["methods"].get(method_name)
                    if method is None:
                        continue
                    for sub in project.objects(value, Frame(where, method, c["name"], None, obj)):
                        if sub.kind == "unknown":
                            continue
                        verdict = self.mode_dependent(sub, mode_dependent_ctor, depth + 1, seen)
                        if verdict:
                            return True
                        if verdict is None:
                            unknown = True
        return None if unknown else False

    # -- events ----------------------------------------------------------------------------------------
    def returned_objects(self, hit: tuple, call: cst.Call, scope: "Scope") -> "list[Source]":
        """The objects a call of the project function ``hit`` (written ``call`` in ``scope``)
        returns, its arguments bound as far as this file's literals say."""
        from torch_audit.lint.project.model import Frame

        project = self.project
        fn = project.full(hit)[1]
        args, kwargs = _local_arguments(call)
        frame = Frame(hit[2], fn, fn.get("cls"), project._bind(fn, args, kwargs, self._frame(scope)))
        out = []
        for r in fn.get("returns") or [["?"]]:
            out.extend(self.object_source(o) for o in project.objects(r, frame, 1))
        return out

    def helper_events(self, call: "Call", depth: int) -> "list[RemoteEvent] | None":
        """Training events of a helper of another file called at ``call`` (or a function of this
        file reached through its summary: a method inherited from a base in another file)."""
        if self.project is None:
            return None
        qualname = call.qualname
        if qualname is None:
            return None  # a local function (the file's own facts follow it), or a method
        hit = self.resolve(qualname)
        if hit is None or hit[0] != "function":
            return None
        key = f"{hit[1]['cls']}.{hit[1]['name']}" if hit[1].get("cls") else hit[1]["name"]
        return self.project.function_effects(hit[2], key, depth)

    def callers(self, scope: "Scope") -> "list[CallSite]":
        """Call sites of a function of this file anywhere in the project."""
        key = self.function_key(scope)
        if key is None or self.project is None:
            return []
        return self.project.call_sites(self.module, key)  # type: ignore[arg-type]


def _local_arguments(call: cst.Call) -> tuple[list, dict]:
    """A call's arguments as summary values: literals are known, everything else unknown."""
    args: list = []
    kwargs: dict = {}
    for a in call.args:
        value = _literal(a.value)
        if a.star == "*":
            args.append(["*"])
        elif a.star == "**":
            kwargs["**"] = ["?"]
        elif a.keyword is not None:
            kwargs[a.keyword.value] = value
        else:
            args.append(value)
    return args, kwargs


def _literal(node: cst.BaseExpression) -> list:
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return ["lit", {"True": True, "False": False, "None": None}[node.value]]
    if isinstance(node, cst.Integer):
        try:
            return ["lit", int(node.value, 0)]
        except ValueError:
            return ["?"]
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return ["lit", value] if isinstance(value, str) else ["?"]
    return ["?"]


def subject_text(subject: tuple | None, helper_params: list[str], call: "Call", is_method: bool) -> str | None:
    """A remote event's subject as named at the local call (``model`` for the argument passed
    for the helper's parameter ``net``)."""
    if subject is None:
        return None
    if subject[0] == "global":
        return None
    if subject[0] == "self":
        func = call.node.func
        if isinstance(func, cst.Attribute):
            receiver = dotted(func.value)
            return f"{receiver}{subject[1]}" if receiver else None
        return None
    _, name, suffix = subject
    params = helper_params[1:] if is_method else helper_params
    position = params.index(name) if name in params else None
    from torch_audit.lint.facts.index import argument

    arg = argument(call.node, position, name)
    if arg is None:
        return None
    text = dotted(arg.value)
    return f"{text}{suffix}" if text else None
