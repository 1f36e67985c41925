"""Inference-like functions and the models they run.

A function is *inference-like* when it runs a model under ``no_grad``/``inference_mode`` (a
``with`` block or a decorator), or is named like evaluation (``evaluate``, ``validate``,
``predict``, ``infer``, ``test`` but not a pytest ``test_*`` function), and calls no
``backward``. Methods of ``nn.Module`` subclasses (including Lightning's ``validation_step``) and
of framework classes are left out: the framework, or the module's caller, decides the mode.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import TYPE_CHECKING

import libcst as cst

from torch_audit.lint.facts.torch_groups import MODE_DEPENDENT_LAYERS, MODE_FREE_PREFIXES
from torch_audit.lint.facts.dataflow import MODULE_SELF_METHODS, Source
from torch_audit.lint.facts.index import GRAD_CONTEXTS, Call, Scope
from torch_audit.lint.facts.names import dotted

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.context import FileContext
    from torch_audit.lint.facts.modules import ModuleClass

INFERENCE_NAME = re.compile(
    r"(^|_)(eval|evaluate|evaluation|validate|validation|valid|val|test|testing|predict|"
    r"prediction|predictions|infer|inference)(_|$)",
    re.IGNORECASE,
)
#: functions that build or initialise a model; a forward pass there initialises lazy layers
BUILDER_NAME = re.compile(r"^_*(make|build|create|init|setup|get|construct|instantiate)(_|$)|__init__", re.IGNORECASE)
#: calls that load trained weights into a model built in the same function
_LOADS_WEIGHTS = frozenset({"load_state_dict", "from_pretrained", "load", "load_checkpoint"})
#: constructors of models that load already prepared for inference, or are not nn.Modules
_NOT_TRAINABLE_PREFIXES = ("torch.jit.", "torch.export.", "onnxruntime.", "tensorrt.")
MODEL_FACTORY_PREFIXES = ("torchvision.models.", "timm.create_model", "timm.models.")
_GRAD_CONTEXT_NAMES = frozenset(GRAD_CONTEXTS) | {"torch.set_grad_enabled", "torch.autocast", "torch.cuda.amp.autocast"}


@dataclasses.dataclass(eq=False)
class ModelUse:
    call: Call
    #: the dotted text of the model object (``model``, ``self.net``)
    subject: str
    #: what built it, when the file shows it
    ctor: Source | None


@dataclasses.dataclass(eq=False)
class InferenceFunction:
    scope: Scope
    #: ``no_grad`` (the model runs with gradients disabled) or ``name``
    reason: str
    model_uses: list[ModelUse]


class InferenceFacts:
    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx

    # -- which functions -----------------------------------------------------------------------
    @functools.cached_property
    def functions(self) -> list[InferenceFunction]:
        out = []
        module_level = self._module_level()
        if module_level is not None:
            out.append(module_level)
        for scope in self.ctx.module_scope.walk():
            if scope.kind != "function" or not self._eligible(scope):
                continue
            if scope.name.startswith("test_") or BUILDER_NAME.search(scope.name):
                continue  # pytest tests, and builders that run a forward pass to initialise
            if self._needs_gradients(scope):
                continue
            uses = [u for u in self.model_uses(scope) if not self._initialising(scope, u)]
            if not uses:
                continue
            # last: a function's events follow its helpers into other files
            if any(e.kind == "backward" for e in self.ctx.training.function_events(scope)):
                continue
            no_grad = [u for u in uses if self.ctx.grad_enabled(u.call.stmt) is False]
            if no_grad:
                out.append(InferenceFunction(scope, "no_grad", uses))
            elif INFERENCE_NAME.search(scope.name):
                out.append(InferenceFunction(scope, "name", uses))
        return out

    def _module_level(self) -> InferenceFunction | None:
        """Scripts and notebooks evaluate at the top level: uses under ``no_grad`` after the
        last training step of the module's own code."""
        scope = self.ctx.module_scope
        if self._needs_gradients(scope):
            return None
        events = self.ctx.training.function_events(scope)
        last_training = max((e.index for e in events if e.kind in ("backward", "step")), default=-1)
        uses = [
            u
            for u in self.model_uses(scope)
            if u.call.stmt.index > last_training
            and self.ctx.grad_enabled(u.call.stmt) is False
            and not self._initialising(scope, u)
        ]
        return InferenceFunction(scope, "no_grad", uses) if uses else None

    def _eligible(self, scope: Scope) -> bool:
        s: Scope | None = scope.parent
        while s is not None:
            if s.kind == "class":
                node = s.node
                assert isinstance(node, cst.ClassDef)
                # methods of module classes and of classes built on other code: the framework
                # or the caller decides the mode
                if any(dotted(b.value) != "object" for b in node.bases):
                    return False
            s = s.parent
        return True

    def _initialising(self, scope: Scope, use: ModelUse) -> bool:
        """A model built in this very function and run without loading weights: a forward
        pass to initialise lazy layers or check shapes, not an evaluation."""
        ctor = use.ctor
        if ctor is None or ctor.scope is not scope:
            return False
        return not any(c.method in _LOADS_WEIGHTS for c in scope.calls)

    def _needs_gradients(self, scope: Scope) -> bool:
        """Code that needs input gradients (saliency, attacks, penalties) is not inference."""
        for call in scope.calls:
            if call.qualname in ("torch.autograd.grad", "torch.autograd.functional.jacobian"):
                return True
            if call.method in ("requires_grad_", "backward", "retain_grad"):
                return True
        return False

    # -- which models ----------------------------------------------------------------------------
    def model_uses(self, scope: Scope) -> list[ModelUse]:
        uses = []
        df = self.ctx.dataflow
        for call in scope.calls:
            func = call.node.func
            if call.qualname is not None:
                continue
            subject = dotted(func)
            if subject is None:
                continue
            if isinstance(func, cst.Name):
                target = call.scope.lookup_scope(func.value)
                defs = target.assignments.get(func.value, []) if target is not None else []
                if any(d.kind in ("def", "class") for d in defs):
                    continue  # a local function or class, not a model object
            ctor = df.constructor_source(func, call.scope, call.stmt.index)
            if ctor is not None and ctor.qualname is None and ctor.name is None:
                ctor_name = dotted(ctor.node.func) if isinstance(ctor.node, cst.Call) else None
                is_local_model = self.ctx.modules.local_class(ctor_name) is not None
            else:
                is_local_model = ctor is not None and self.ctx.modules.local_class(ctor.name) is not None
            known_model = is_local_model or (
                ctor is not None
                and ctor.qualname is not None
                and (ctor.qualname.startswith(("torch.nn.",) + MODEL_FACTORY_PREFIXES))
            )
            if _result_unused(call):
                continue  # run for its side effects (hooks, warm-up, capture), not to predict
            if known_model or (ctor is not None and ctor.remote is not None and self.ctx.crossfile.obj_is_module(ctor.remote)):
                # only objects known to be modules: a getter (`get_model()`), a Kalman filter's
                # `model` or a detector wrapper named like a network are not
                uses.append(ModelUse(call, subject, ctor))
        return uses

    def mode_dependent(self, use: ModelUse) -> bool | None:
        """Does the model contain layers whose behaviour differs in eval mode (Dropout,
        BatchNorm and the like)? True, False, or None when its content is not fully known."""
        ctor = use.ctor
        if ctor is not None and ctor.remote is not None:
            return self.ctx.crossfile.mode_dependent(ctor.remote, self._remote_ctor_mode_dependent)
        if ctor is None or not isinstance(ctor.node, cst.Call):
            return None
        q = ctor.qualname
        if q is not None:
            if q.startswith(_NOT_TRAINABLE_PREFIXES):
                return False
            return self._ctor_mode_dependent(ctor.node, q, ctor.scope or self.ctx.module_scope, set())
        name = ctor.name or dotted(ctor.node.func)
        cls = self.ctx.modules.local_class(name)
        if cls is None:
            return None
        return self._class_mode_dependent(cls, set())

    @staticmethod
    def _remote_ctor_mode_dependent(q: str | None, obj) -> bool | None:
        """A torch layer built in another file (only its name is known there)."""
        if not q:
            return None
        if q in MODE_DEPENDENT_LAYERS or "Dropout" in q or "BatchNorm" in q:
            return True
        if q.startswith(MODE_FREE_PREFIXES) or q.endswith("Loss"):
            return False
        return None

    def _ctor_mode_dependent(self, call: cst.Call, q: str | None, scope: Scope, seen: set) -> bool | None:
        if q is None:
            cls = self.ctx.modules.local_class(dotted(call.func))
            return None if cls is None else self._class_mode_dependent(cls, seen)
        if q in MODE_DEPENDENT_LAYERS or "Dropout" in q or "BatchNorm" in q:
            return True
        if q in ("torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU", "torch.nn.MultiheadAttention"):
            return any(a.keyword is not None and a.keyword.value == "dropout" for a in call.args)
        if q in ("torch.nn.Sequential", "torch.nn.ModuleList"):
            for a in call.args:
                if a.star:
                    return True
                inner = a.value
                if isinstance(inner, (cst.List, cst.Tuple)):
                    elements = [e.value for e in inner.elements]
                else:
                    elements = [inner]
                unknown = False
                for el in elements:
                    if not isinstance(el, cst.Call):
                        return None
                    verdict = self._ctor_mode_dependent(el, scope.qualname(el.func), scope, seen)
                    if verdict:
                        return True
                    unknown = unknown or verdict is None
            return None if unknown else False
        if q.startswith(MODE_FREE_PREFIXES) or (q.startswith("torch.nn.") and q.endswith("Loss")):
            return False
        if q.startswith(MODEL_FACTORY_PREFIXES):
            return True  # torchvision/timm classifiers: Dropout or BatchNorm in every one of them
        hit = self.ctx.crossfile.resolve(q)
        if hit is not None and hit[0] == "class":
            return self.ctx.crossfile.mode_dependent(self.ctx.crossfile.instance(hit, call), self._remote_ctor_mode_dependent)
        return None  # another library's model: unknown

    def _class_mode_dependent(self, cls: "ModuleClass", seen: set) -> bool | None:
        if cls.name in seen:
            return False
        seen.add(cls.name)
        for scope in cls.scope.walk():
            for call in scope.calls:
                if call.qualname and call.qualname.startswith("torch.nn.functional.") and (
                    "dropout" in call.qualname or "batch_norm" in call.qualname
                ):
                    return True
        for attr, defs in cls.scope.attributes.items():
            if attr == "training":
                return True
        if cls.lightning:
            return True
        unknown = False
        for sub in cls.submodules.values():
            verdict = self._ctor_mode_dependent(sub.ctor, sub.qualname, sub.scope, seen)
            if verdict:
                return True
            unknown = unknown or verdict is None
        init = cls.init
        if init is not None:
            # modules built in loops or helpers and stored through other means
            for call in init.calls:
                q = call.qualname
                if q is not None and (q in MODE_DEPENDENT_LAYERS or "Dropout" in q or "BatchNorm" in q):
                    return True
        # what the class inherits: another local module class, or a torch layer
        for raw in (dotted(b.value) for b in cls.node.bases):
            parent = self.ctx.modules.local_class(raw)
            if parent is not None:
                verdict = self._class_mode_dependent(parent, seen)
                if verdict:
                    return True
                unknown = unknown or verdict is None
        for base in cls.bases:
            if base is None or base == "torch.nn.Module" or base.startswith(MODE_FREE_PREFIXES):
                continue
            if base in MODE_DEPENDENT_LAYERS:
                return True
            if self.ctx.modules.local_class(base) is None:
                unknown = True  # a torch container or another library's module: unknown content
        return None if unknown else False

    # -- evidence of eval() --------------------------------------------------------------------
    @functools.cached_property
    def eval_subjects(self) -> set[str]:
        """Last components of every object put in eval mode anywhere in the file
        (``model.eval()``, ``self.net.train(False)``, ``model = load().eval()``)."""
        subjects: set[str] = set()
        training = self.ctx.training
        for call in self.ctx.indexer.all_calls:
            if training.classify(call) != "eval":
                continue
            receiver = call.receiver
            # model.cuda().eval(), model.to(device).eval(): the same module
            while (
                isinstance(receiver, cst.Call)
                and isinstance(receiver.func, cst.Attribute)
                and receiver.func.attr.value in MODULE_SELF_METHODS
            ):
                receiver = receiver.func.value
            text = dotted(receiver) if receiver is not None else None
            if text:
                subjects.add(text.rsplit(".", 1)[-1])
            stmt = call.stmt.node
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        for t in small.targets:
                            name = dotted(t.target)
                            if name:
                                subjects.add(name.rsplit(".", 1)[-1])
        return subjects

    def evaluates_in_eval_mode(self, fn: InferenceFunction, use: ModelUse, depth: int = 3) -> bool:
        """Is there evidence that the model is (or may be) in eval mode when ``fn`` runs it?"""
        if use.subject.rsplit(".", 1)[-1] in self.eval_subjects:
            return True
        if self._mode_set_by_context(use):
            return True
        if self._eval_in_or_above(fn.scope, depth, set()):
            return True
        # callers in other files (or the file's own callers, through the project)
        for site in self.ctx.crossfile.callers(fn.scope):
            caller = site.frame
            key = f"{caller.cls}.{caller.fn.get('name')}" if caller.cls else caller.fn.get("name")
            project = self.ctx.crossfile.project
            if key and any(e.kind == "eval" for e in project.function_effects(caller.module, key, 2)):
                return True
            if key == "<module>" and any(e["k"] == "eval" for e in caller.fn.get("events", [])):
                return True
        return False

    def _mode_set_by_context(self, use: ModelUse) -> bool:
        """``with eval_mode(model):``: a context manager given the model may set its mode; one
        of the project that calls ``eval()`` on it does."""
        for name, expr in use.call.stmt.withs:
            if not isinstance(expr, cst.Call) or name in _GRAD_CONTEXT_NAMES:
                continue
            if any(dotted(a.value) == use.subject for a in expr.args):
                return True
        return False

    def _eval_in_or_above(self, scope: Scope, depth: int, seen: set) -> bool:
        if id(scope) in seen:
            return False
        seen.add(id(scope))
        training = self.ctx.training
        # only eval() is evidence: a caller that calls model.train() and then evaluates is
        # the very bug this looks for
        if any(e.kind == "eval" for e in training.function_events(scope)):
            return True
        if depth <= 0:
            return False
        return any(
            self._eval_in_or_above(caller.scope, depth - 1, seen)
            for caller in training.callers(scope)
        )


def _result_unused(call: Call) -> bool:
    """``model(x)`` as a statement of its own: the output is thrown away."""
    stmt = call.stmt.node
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and stmt.body[0].value is call.node
    )
