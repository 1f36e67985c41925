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

    The check is a cheap always-on sentinel: during a training forward pass it keeps references
    to the module outputs; when `backward()` starts it reduces them (one float32 sum per output
    on CPU, one fused `torch._foreach_norm` on other devices; outputs shared between a module
    and its container counted once), releases them, and keeps a small flag vector that
    is read with the step's other flags. No extra host synchronisation, no memory held during
    backward.

    ## Why is this bad?
    A NaN loss says that something broke, not where. The first module whose output is
    non-finite is where to look: a `log` of zero, a division by a zero norm, an overflowing
    `exp`, fp16 overflow in attention scores. `torch.autograd.detect_anomaly` finds the backward
    op instead, at twice the cost of the step, and misses forward NaNs whose gradients stay
    finite.

    ## Known problems
    Only forward passes with gradients enabled that reach a `backward()` are watched (inference
    under `no_grad` is not). An output modified in place after its module returned is seen with
    the modification. Modules inside a `torch.compile`d region do not run Python hooks and are
    not seen individually. The reductions run in float32 (a float16 norm would overflow at
    65504), so only finite activations that add up past about 3e38 on CPU, or whose L2 norm
    passes it elsewhere (values above about 1e19), are reported. The reduction costs one read of every activation per step (about 2%
    of a small CNN's CPU step). The opt-in `precise` mode (a `TorchDispatchMode` that checks
    every operator's output) runs on the forward pass *after* the one that went non-finite, so
    it names the operation only when the problem recurs.

    ## References
    - https://pytorch.org/docs/stable/autograd.html#anomaly-detection
    - https://pytorch.org/docs/stable/notes/numerical_accuracy.html
    """

    code = "TA704"
    name = "nonfinite-activation"
    severity = Severity.ERROR
    message = "first non-finite forward output: {module} ({cls}){where}"
    fix_title = "Guard the operation (eps in divisions and logs, clamp before exp, fp32 for softmax)"
    events = frozenset({"forward", "backward", "step_pre", "finish",
                        "root_forward", "root_forward_end"})
    options = {
        "precise": Option(
            False,
            "after a non-finite output was found, run the next forward pass under a dispatch mode that "
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
        self._batches: list = []
        self._forwards = 0
        self._armed = False
        self._mode = None

    def close(self) -> None:
        self._records = []
        self._batches = []
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    # -- precise mode: one forward pass under a dispatch mode, after the sentinel fired --------
    def on_root_forward(self, module) -> None:
        # one frame walk per outermost forward: where the model is called, as a fallback location
        if self._torch.is_grad_enabled():
            self._root_site = self._user_site(3)
            self._forwards += 1
            if self._forwards > 8:  # forward passes that never reach a backward: forget them
                self._records = []
                self._forwards = 1
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
            tensors = [output] if output.is_floating_point() and output.numel() else []
        elif isinstance(output, (tuple, list)):
            tensors = [t for t in output
                       if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
        else:
            return
        if not tensors:
            return
        self._records.append((module, tensors, self._root_site))

    def on_backward(self, event) -> None:
        # Reduce the outputs of this forward pass now, before autograd frees them, and keep only
        # a small vector of flags: holding the outputs through backward would keep activation
        # memory alive and cost far more than the reduction.
        records, self._records = self._records, []
        self._forwards = 0
        if not records:
            return
        torch = self._torch
        from torch_audit.runtime.reduce import finite_sentinels

        unique: dict[int, int] = {}
        tensors, meta = [], []
        for module, outs, root_site in records:
            idx = []
            for t in outs:
                k = id(t)
                if k not in unique:
                    unique[k] = len(tensors)
                    tensors.append(t.detach())
                idx.append(unique[k])
            meta.append((module, idx, root_site))
        with torch.no_grad():
            flags = finite_sentinels(tensors)
        self._batches.append((self.session.step, meta, flags))

    def on_step_pre(self, ctx) -> None:
        self._records = []  # forward passes without backward: nothing to attribute
        self._flush_batches()

    def on_finish(self) -> None:
        self._records = []
        self._flush_batches()

    def _flush_batches(self) -> None:
        batches, self._batches = self._batches, []
        for step, meta, flags in batches:
            self.defer(flags, lambda values, m=meta, s=step: self._locate(values, m, s))

    def _locate(self, values: list[float], meta: list, step: int) -> None:
        from torch_audit.runtime.source import is_torch_class

        for module, idx, root_site in meta:
            if all(math.isfinite(values[i]) for i in idx):
                continue
            if self.opts["precise"]:
                self._armed = True
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
