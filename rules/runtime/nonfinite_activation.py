from __future__ import annotations

import math

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


class NonFiniteActivation(RuntimeCheck):
    """## What it does
    Names the first module (qualified name, class, and the line of the user's `forward` that
    calls it, or for a user-defined module its class) whose forward output went non-finite, in
    the step where it happened.

    The check is a cheap sentinel: during a training forward pass it only keeps references to
    the module outputs autograd keeps anyway; when that step's loss or gradients turn out
    non-finite (read in the same fused host transfer as the other step checks) it scans the
    kept outputs in execution order and reports the first non-finite one. Nothing is computed
    on the outputs of healthy steps.

    ## Why is this bad?
    A NaN loss says that something broke, not where. The first module whose output is
    non-finite is where to look: a `log` of zero, a division by a zero norm, an overflowing
    `exp`, fp16 overflow in attention scores. `torch.autograd.detect_anomaly` finds the backward
    op instead, at twice the cost of the step, and misses forward NaNs whose gradients stay
    finite.

    ## Known problems
    Only forward passes with gradients enabled are watched (inference under `no_grad` is not).
    With gradient accumulation only the last micro-batch of a step is kept. An output modified
    in place after its module returned is seen with the modification. Modules inside a
    `torch.compile`d region do not run Python hooks and are not seen individually. Holding the
    outputs until the step keeps activation memory alive a little longer than autograd would.
    The opt-in `precise` mode (a `TorchDispatchMode` that checks every operator's output) runs
    on the forward pass *after* the one that went non-finite, so it names the operation only
    when the problem recurs.

    ## References
    - https://pytorch.org/docs/stable/autograd.html#anomaly-detection
    - https://pytorch.org/docs/stable/notes/numerical_accuracy.html
    """

    code = "TA704"
    name = "nonfinite-activation"
    severity = Severity.ERROR
    message = "first non-finite forward output: {module} ({cls}){where}"
    fix_title = "Guard the operation (eps in divisions and logs, clamp before exp, fp32 for softmax)"
    events = frozenset({"forward", "backward", "backward_end", "step_pre", "finish",
                        "root_forward", "root_forward_end"})
    uses_grad_norms = True
    options = {
        "precise": Option(
            False,
            "after the sentinel fired, replay the next forward pass under a dispatch mode that "
            "names the first non-finite operation and its source line (slow for that one pass)",
            bool,
        ),
    }

    def setup(self) -> None:
        import torch

        from torch_audit.runtime.source import user_site

        self._torch = torch
        self._user_site = user_site
        self._root_site = None
        self._records: list = []
        self._losses: list = []
        self._drop_next = False
        self._armed = False
        self._mode = None

    def close(self) -> None:
        self._records = []
        self._losses = []
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    # -- precise mode: one forward pass under a dispatch mode, after the sentinel fired --------
    def on_root_forward(self, module) -> None:
        # one frame walk per outermost forward: where the model is called, as a fallback location
        if self._torch.is_grad_enabled():
            self._root_site = self._user_site(3)
        if self._armed and self._mode is None:
            from torch_audit.runtime.precise import FirstNonFiniteOp

            self._armed = False
            self._mode = FirstNonFiniteOp()
            self._mode.__enter__()

    def on_root_forward_end(self, module) -> None:
        mode, self._mode = self._mode, None
        if mode is None:
            return
        mode.__exit__(None, None, None)
        if mode.found is None:
            return
        from torch_audit.runtime.util import site_str

        op, site = mode.found
        path, line = site if site else (None, None)
        self.report(f"op:{op}@{site_str(site)}", module=module, path=path, line=line,
                    value="non-finite",
                    message=f"first non-finite operation (precise mode): {op} at {site_str(site)}")

    def on_forward(self, module, output) -> None:
        torch = self._torch
        if not torch.is_grad_enabled():
            return
        if isinstance(output, torch.Tensor):
            tensors = [output] if output.is_floating_point() else []
        elif isinstance(output, (tuple, list)):
            tensors = [t for t in output if isinstance(t, torch.Tensor) and t.is_floating_point()]
        else:
            return
        if not tensors:
            return
        if self._drop_next:
            self._records = []
            self._drop_next = False
        self._records.append((module, tensors, self._root_site))

    def on_backward(self, event) -> None:
        value = event.value
        if value is not None:
            self._losses.append(value)

    def on_backward_end(self, event) -> None:
        self._drop_next = True

    def on_step_pre(self, ctx) -> None:
        records, self._records = self._records, []
        losses, self._losses = self._losses, []
        self._drop_next = False
        if not ctx.checked or not records:
            return
        torch = self._torch
        with torch.no_grad():
            sentinel = ctx.grad_norms().sum().reshape(1)
            for v in losses:
                sentinel = sentinel + v.to(sentinel.device, torch.float32)
        step = ctx.step
        self.defer(sentinel, lambda values: self._maybe_locate(values[0], records, step))

    def on_finish(self) -> None:
        records, self._records = self._records, []
        losses, self._losses = self._losses, []
        if not records or not losses:
            return
        torch = self._torch
        sentinel = torch.stack([v.reshape(()).float().cpu() for v in losses]).sum().reshape(1)
        step = self.session.step
        self.defer(sentinel, lambda values: self._maybe_locate(values[0], records, step))

    def _maybe_locate(self, sentinel: float, records: list, step: int) -> None:
        if math.isfinite(sentinel):
            return
        if self.opts["precise"]:
            self._armed = True
        torch = self._torch
        from torch_audit.runtime.source import is_torch_class

        # Something went non-finite this step: one extra read to find the first bad output.
        flat = []
        for i, (_, tensors, _) in enumerate(records):
            for t in tensors:
                flat.append((i, t))
        with torch.no_grad():
            flags = torch.stack([torch.isfinite(t).all().cpu() for _, t in flat]).tolist()
        for (i, _), ok in zip(flat, flags):
            if ok:
                continue
            module, _, root_site = records[i]
            name = self.session.index.name(module)
            cls = type(module).__name__
            site = None
            if is_torch_class(type(module)):
                site = self.session.call_site(module) or root_site
            path, line = site if site else (None, None)
            if path is None:
                loc = self.session.module_location(module)
                if loc:
                    path, line = loc
            from torch_audit.runtime.source import display_path

            where = f" called at {display_path(site[0])}:{site[1]}" if site else ""
            self.report(name, step=step, module=name, path=path, line=line, value="non-finite",
                        message=self.message.format(module=name, cls=cls, where=where))
            return
