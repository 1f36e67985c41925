import libcst as cst

from torch_audit.findings import Severity
from torch_audit.rule import StaticRule

#: calls that return a model object (besides torch.nn layers and local module classes)
MODEL_FACTORY_PREFIXES = ("torchvision.models.", "timm.create_model", "transformers.", "diffusers.")


class SaveWholeModel(StaticRule):
    """## What it does
    Finds `torch.save(model, path)` where `model` is an `nn.Module` (a torch layer, a module class
    of the file, a torchvision/timm/Hugging Face model, or `self` inside a module's method), also
    inside a dict (`torch.save({"model": model}, path)`), instead of its `state_dict()`.

    ## Why is this bad?
    Saving the module pickles the object with references to its class by import path. The file
    then loads only where the same code lives at the same module path, breaks on refactors and
    torch upgrades, and needs `weights_only=False` to load, which executes arbitrary code from
    the file. A `state_dict()` is plain tensors: portable and loadable with `weights_only=True`.

    ## Known problems
    Only models whose construction is visible in the same function (or `self.` attribute set in
    `__init__`) are recognised; `torch.save(model, path)` with a `model` parameter is not
    reported. Saving a whole module on purpose (for `torch.load` in a notebook of the same code
    base) is better done with `torch.export` or TorchScript.

    ## References
    - [Saving and loading models](https://pytorch.org/tutorials/beginner/saving_loading_models.html)
    - [Serialization semantics](https://pytorch.org/docs/stable/notes/serialization.html)
    """

    code = "TA612"
    name = "save-whole-model"
    severity = Severity.WARNING
    message = "torch.save of the module {what} pickles the whole object; save {what}.state_dict() instead"
    fix_title = "Save model.state_dict() and load it with load_state_dict(torch.load(..., weights_only=True))"

    def leave_Module(self, node: cst.Module) -> None:
        for call in self.ctx.indexer.all_calls:
            if call.qualname != "torch.save":
                continue
            obj = call.arg(0, "obj")
            if obj is None:
                continue
            values = [obj.value]
            if isinstance(obj.value, cst.Dict):
                values = [el.value for el in obj.value.elements if isinstance(el, cst.DictElement)]
            for value in values:
                if self._is_module(value, call.scope, call.stmt.index):
                    self.report(value, what=self.ctx.code(value))
                    break

    def _is_module(self, expr: cst.BaseExpression, scope, at: int) -> bool:
        if (
            isinstance(expr, cst.Name)
            and scope.class_scope is not None
            and scope.params[:1] == [expr.value]
            and all(a.kind == "param" for a in scope.assignments.get(expr.value, []))
            and self.ctx.modules.enclosing_class(scope) is not None
        ):
            return True  # `self` in a method of an nn.Module subclass
        if not isinstance(expr, (cst.Name, cst.Attribute, cst.Call)):
            return False
        src = self.ctx.dataflow.constructor_source(expr, scope, at)
        if src is not None and src.remote is not None and getattr(src.remote, "kind", None) == "instance":
            return self.ctx.crossfile.obj_is_module(src.remote)  # a module class of another file
        if src is None or not isinstance(src.node, cst.Call):
            return False
        q = src.qualname
        if q is not None:
            last = q.rsplit(".", 1)[-1]
            if q.startswith("torch.nn.") and last[:1].isupper() and not q.startswith("torch.nn.parameter"):
                return last not in ("Parameter", "ParameterList", "ParameterDict", "Buffer") and "Loss" not in last
            if q.startswith(MODEL_FACTORY_PREFIXES):
                return q.startswith("torchvision.models.") and last[:1].islower() or q == "timm.create_model" or (
                    last == "from_pretrained" and "Model" in q
                )
            return False
        func = src.node.func
        if isinstance(func, cst.Name):
            return self.ctx.modules.local_class(func.value) is not None
        return False
