from __future__ import annotations

import math
import weakref

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


#: backward() calls whose flags wait for an optimizer step at most
MAX_BATCHES = 32


class NonFiniteActivation(RuntimeCheck):
    """## What it does
    Names the first module (qualified name, class, and the line that called it, or for a
    user-defined module its class) whose forward output went non-finite, in the step where it
    happened. When that module cannot make a non-finite value from a finite input (dropout,
    ReLU and the other finite-preserving layers below, with finite parameters), the value was
    made by the code that ran between the last module output read finite and this call (a
    division or a `log` in the enclosing `forward`): the finding says so, names both modules
    and points at the call that received it. The line is the actual call, also for a module
    called several times in one `forward`.

    The check is a cheap always-on sentinel: during a training forward pass it reduces each
    module output to one float32 sum as the output is produced (NaN and ±inf propagate through a
    sum, and the data is still in the cache) and keeps only those sums: when `backward()` starts
    they become a small flag vector, read with the step's other flags. It keeps no reference to
    any activation and adds no host synchronisation. Outputs it need not read are skipped: one it
    read already (a container returning its child's output), and the output of a layer that is
    finite whenever its input is (element-wise activations, dropout, max-pooling, reshapes, and
    normalisation with the batch's own statistics, whose weights are read instead) when that
    input is a module output it read, unchanged since. Skipping never changes which module is
    named: a non-finite output of such a layer means its input was non-finite, and that was
    seen first.

    ## Why is this bad?
    A NaN loss says that something broke, not where. The first module whose output is
    non-finite is where to look: a `log` of zero, a division by a zero norm, an overflowing
    `exp`, fp16 overflow in attention scores. `torch.autograd.detect_anomaly` finds the backward
    op instead, at twice the cost of the step, and misses forward NaNs whose gradients stay
    finite.

    ## Known problems
    Only forward passes with gradients enabled that reach a `backward()` are watched (inference
    under `no_grad` is not). An output is read when its module returns: a value made
    non-finite in place afterwards (`y.div_(0)` between two layers) is found at the next
    module that returns it or a tensor computed from it, and blamed on the code between the two
    when that module is finite-preserving; otherwise that module is named. Modules inside a `torch.compile`d region
    do not run Python hooks and are not seen individually. The sums run in float32 (a float16
    sum would overflow at 65504), so only finite activations that add up past about 3e38 are
    reported; a layer skipped as finite-preserving could still overflow float32 by scaling
    values above about 1e36 (float16 outputs are always read). The reads cost about one pass
    over the activations that are not skipped: about 1% of a small CNN's CPU step. The opt-in
    `precise` mode (a `TorchDispatchMode` that checks every operator's output) runs on the
    forward pass *after* the one that went non-finite, so it names the operation only when the
    problem recurs.

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

        from torch_audit.runtime.check_helpers import user_site

        self._torch = torch
        self._user_site = user_site
        self._root_site = None
        from torch_audit.runtime.check_helpers import parameters_to_read

        self._parameters_to_read = parameters_to_read
        from torch_audit.runtime.check_helpers import finite_preserving_parameters

        self._finite_preserving = finite_preserving_parameters
        import os
        import sys

        import torch_audit

        self._getframe = sys._getframe
        self._torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
        self._module_py = torch.nn.modules.module.__file__
        self._own_dirs = tuple(os.path.dirname(os.path.abspath(p)) for p in
                               (torch_audit.__file__, torch_audit.rules.__file__))
        self._hook_codes: set = set()  # the session's hooks and Module.__call__
        self._caller_codes: set = set()  # functions that call modules
        self._ref = weakref.ref
        self._records: list = []
        self._sentinels: list = []
        #: id(tensor) -> (weak reference, version) of every output read (or covered) since the
        #: last backward: the same tensor returned again, unchanged, is not read twice
        self._seen: dict = {}
        self._batches: list = []
        self._forwards = 0
        self._armed = False
        self._mode = None

    def close(self) -> None:
        self._forget()
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
                self._forget()
                self._forwards = 1
        if self._armed and self._mode is None:
            from torch_audit.runtime.check_helpers import FirstNonFiniteOp

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
        from torch_audit.runtime.check_helpers import site_str

        op, site = mode.found
        path, line = site if site else (None, None)
        self.report(f"op:{op}@{site_str(site)}", module=module, path=path, line=line,
                    value="non-finite",
                    message=f"first non-finite operation (precise mode): {op} at {site_str(site)}")

    def on_forward(self, module, args, output) -> None:
        torch = self._torch
        if not torch.is_grad_enabled():
            return
        if isinstance(output, torch.Tensor):
            outputs = (output,)
        elif isinstance(output, (tuple, list)):
            outputs = output
        else:
            return
        seen = self._seen
        indices = []
        dtype = None  # of a single output: whether the module could have made it non-finite
        covered = False
        for t in outputs:
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or not t.numel():
                continue
            entry = seen.get(id(t))
            if entry is not None and entry[0]() is t and entry[1] == t._version:
                continue  # read already (a container returning its child's output, an Identity)
            if len(outputs) == 1:
                dtype = t.dtype
                if self._covered_by_input(module, args, t, indices):
                    seen[id(t)] = (self._ref(t), t._version)
                    covered = True
                    continue
            indices.append(self._read(t))
            seen[id(t)] = (self._ref(t), t._version)
        if indices or covered:
            self._records.append((module, indices, self._caller_site(), dtype))

    def _caller_site(self):
        """``(path, line)`` of the frame that called the module now returning: the line of
        this very call (a module used twice has two). A few frame hops past the session's hook
        and ``Module.__call__``, each a set lookup of the frame's code object."""
        frame = self._getframe(2)
        skip, callers = self._hook_codes, self._caller_codes
        while frame is not None:
            code = frame.f_code
            if code in callers:
                return code.co_filename, frame.f_lineno
            if code in skip:
                frame = frame.f_back
                continue
            path = code.co_filename
            if path == self._module_py or path.startswith(self._own_dirs):
                skip.add(code)
                frame = frame.f_back
                continue
            callers.add(code)
            return path, frame.f_lineno
        return None

    def _read(self, t) -> int:
        """One float32 sum of ``t``, taken now, while the output is still in the cache: NaN and
        ±inf propagate through it. Returns its index among this forward pass's sentinels."""
        self._sentinels.append(t.detach().sum(dtype=self._torch.float32))
        return len(self._sentinels) - 1

    def _covered_by_input(self, module, args, output, indices: list) -> bool:
        """Whether ``output`` is finite whenever the module's input is, and the input is a
        module output read unchanged (see ``torch_audit.runtime.finite_preserving``); the module's
        parameters are then read instead (their indices appended to ``indices``)."""
        params = self._parameters_to_read(module, output)
        if params is None or not args:
            return False
        x = args[0]
        entry = self._seen.get(id(x))
        if entry is None or entry[0]() is not x:
            return False
        # an in-place module (ReLU(inplace=True)) bumps its input's version once itself; any
        # other change since the read (a user's `x.div_(0)` in between) means a fresh read
        expected = x._version - 1 if output is x and getattr(module, "inplace", False) else x._version
        if entry[1] != expected:
            return False
        for p in params:  # now: under FSDP a layer's parameters are gathered only in its forward
            indices.append(self._read(p))
        return True

    def on_backward(self, event) -> None:
        # Only a small vector of flags survives the forward pass: the outputs themselves were
        # reduced as they were produced, so no activation is kept alive for this check.
        records, sentinels = self._records, self._sentinels
        self._forget()
        self._forwards = 0
        if not records:
            return
        device = sentinels[0].device
        if any(s.device != device for s in sentinels):  # a model split over devices
            sentinels = [s.to(device, non_blocking=True) for s in sentinels]
        self._batches.append((self.session.step, records, self._torch.stack(sentinels)))
        if len(self._batches) >= MAX_BATCHES:
            # no optimizer step hands them over (a hand-written update): do it now, so that
            # memory stays bounded (the session reads deferred values in bulk)
            self._flush_batches()

    def _forget(self) -> None:
        """Drop what was recorded since the last backward."""
        self._records, self._sentinels, self._seen = [], [], {}

    def on_step_pre(self, ctx) -> None:
        self._forget()  # forward passes without backward: nothing to attribute
        self._flush_batches()

    def on_finish(self) -> None:
        self._forget()
        self._flush_batches()

    def _flush_batches(self) -> None:
        batches, self._batches = self._batches, []
        for step, meta, flags in batches:
            self.defer(flags, lambda values, m=meta, s=step: self._locate(values, m, s))

    def _blameless(self, module, dtype) -> bool:
        """Whether ``module``, which returned one tensor of ``dtype``, cannot have made a
        non-finite output from a finite input (a finite-preserving layer whose parameters are
        finite now)."""
        from types import SimpleNamespace

        try:  # the predicate looks at the output's dtype only (float16 can overflow)
            params = self._finite_preserving(module, SimpleNamespace(dtype=dtype))
        except Exception:
            return False
        if params is None:
            return False
        try:
            return all(bool(self._torch.isfinite(p).all()) for p in params)  # findings only
        except Exception:
            return False

    def _shown_site(self, module, site):
        """The call line to show: the actual caller, unless it is torch's own code (the
        ``forward`` of an ``nn.Sequential``): then the line of the nearest user-defined module
        that uses it, or where the model was called."""
        if site is None or site[0].startswith(self._torch_dir):
            return self.session.call_site(module) or self._root_site
        return site

    def _blame_between(self, meta: list, k: int, step: int) -> None:
        """The module of ``meta[k]`` received a non-finite input it cannot have made: the code
        that ran between the last module output read finite (``meta[k - 1]``) and this call,
        in the enclosing module's ``forward``, made it."""
        from torch_audit.runtime.check_helpers import site_str

        index = self.session.index
        module, _, site, _ = meta[k]
        site = self._shown_site(module, site)
        name, cls = index.name(module), type(module).__name__
        parent = index.parent(module)
        owner = index.name(parent) if parent is not None else name

        def where(s, other=None) -> str:
            if s is None:
                return "an unknown line"
            if other is not None and s[0] == other[0]:
                return f"line {s[1]}"
            return site_str(s)

        prev_site = None
        if k > 0:
            prev, _, prev_site, _ = meta[k - 1]
            prev_site = self._shown_site(prev, prev_site)
            before = (f"between {index.name(prev)} ({type(prev).__name__}, finite output at "
                      f"{where(prev_site, site)})")
        else:
            before = "before any module output (the model's input, or code before the first module)"
        path, line = site if site else (None, None)
        self.report(f"between:{name}", step=step, module=owner, path=path, line=line,
                    value="non-finite",
                    message=(f"first non-finite value made by the code {before} and "
                             f"{name} ({cls}, called at {where(site, prev_site)}), which cannot make one "
                             f"from finite input: look at the operations in between"))

    def _locate(self, values: list[float], meta: list, step: int) -> None:
        from torch_audit.runtime.check_helpers import is_torch_class

        for k, (module, idx, site, dtype) in enumerate(meta):
            if all(math.isfinite(values[i]) for i in idx):
                continue
            if self.opts["precise"]:
                self._armed = True
            if dtype is not None and self._blameless(module, dtype):
                self._blame_between(meta, k, step)
                return
            name = self.session.index.name(module)
            cls = type(module).__name__
            if not is_torch_class(type(module)):
                site = None  # a user's module: its class is the place to look
            else:
                site = self._shown_site(module, site)
            path, line = site if site else (None, None)
            if path is None:
                loc = self.session.module_location(module)
                if loc:
                    path, line = loc
            from torch_audit.runtime.check_helpers import site_str

            where = f" called at {site_str(site)}" if site else ""
            self.report(name, step=step, module=name, path=path, line=line, value="non-finite",
                        message=self.message.format(module=name, cls=cls, where=where))
            return
