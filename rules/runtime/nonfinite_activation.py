from __future__ import annotations

import math
import random
import weakref

from torch_audit.findings import Severity
from torch_audit.rule import Option
from torch_audit.runtime.check import RuntimeCheck


#: outputs with at most this many elements are not reduced when their module returns but
#: batched (see ``NonFiniteActivation._flush``): for a small tensor the per-call cost of a
#: reduction (detach, a kernel, a scalar) is many times the reduction itself; a large one is
#: read at once, while it is still in the cache
SMALL = 4096
#: batched outputs held at most before they are reduced (a count, and elements): they are held
#: only for part of one forward pass, and each stack stays under 128 KiB of float32, which the
#: CPU allocator serves from its heap (larger blocks are mapped afresh, and their page faults
#: made a stack of 64 LSTM-cell outputs cost four times one of 32)
MAX_PENDING = 32
MAX_PENDING_ELEMENTS = 7 * 4096

#: the batching state of parameters (read instead of a normalisation layer's output; module
#: None), batched like the outputs of a module whose outputs nobody changes in place
_PARAMETERS = (lambda: None, True)


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

    The check is a cheap sentinel: during a watched training forward pass it reduces each
    module output to one float32 sum (NaN and ±inf propagate through a sum), a large output
    when its module returns (the data is still in the cache), small ones (up to 4,096 values)
    together, stacked by shape, when the forward pass ends or 32 are waiting: on a model of
    many small calls (an LSTM cell per timestep) a reduction per call costs more than the
    layers. Only the sums outlive the forward pass: when `backward()` starts they become a
    small flag vector, read with the step's other flags; no activation is kept past its forward
    pass and no host synchronisation is added. A batched output is read after its module
    returned, so code that changed it in place in between (`y.div_(0)`) would be blamed on the
    module: a module's first outputs are read at once and their version counters watched, and
    a module whose output was changed in place after it returned has its outputs read at once
    from then on. Outputs it need not read are skipped: one it read already (a container returning its child's output), and the output of a layer that is
    finite whenever its input is (element-wise activations, dropout, max-pooling, reshapes, and
    normalisation with the batch's own statistics, whose weights are read instead) when that
    input is a module output it read, unchanged since. Skipping never changes which module is
    named: a non-finite output of such a layer means its input was non-finite, and that was
    seen first.

    Watched passes: every training pass (a forward pass that reaches `backward()`) of a
    warm-up (`warmup`, 16), then one in `sample_every` (4), drawn with a fixed seed rather than
    every N-th (a GAN's alternating discriminator and generator passes would leave one kind
    never watched), and every pass once a non-finite loss, gradient or parameter was found
    (`nonfinite-loss`, `-gradient`, `-parameter`), so that the next occurrence is located.
    The other checks, the loss among them, see every pass. `sample_every=1` watches them all.

    ## Why is this bad?
    A NaN loss says that something broke, not where. The first module whose output is
    non-finite is where to look: a `log` of zero, a division by a zero norm, an overflowing
    `exp`, fp16 overflow in attention scores. `torch.autograd.detect_anomaly` finds the backward
    op instead, at twice the cost of the step, and misses forward NaNs whose gradients stay
    finite.

    ## Known problems
    Only forward passes with gradients enabled that reach a `backward()` are watched (inference
    under `no_grad` is not). After the warm-up, a non-finite value made on an unwatched pass is
    reported by `nonfinite-loss` and `nonfinite-gradient` but located only when it recurs: at
    once when it poisoned the parameters (the finding is then marked a follow-on of the step
    where it began), later or never when it was transient (a batch that overflowed once, a step
    the loop skipped). An output is read when its module returns: a value made
    non-finite in place afterwards (`y.div_(0)` between two layers) is found at the next
    module that returns it or a tensor computed from it, and blamed on the code between the two
    when that module is finite-preserving; otherwise that module is named. A module first seen
    after the first step (a branch taken late), or one called at a new line, whose small output
    is changed in place after the call is batched until the change is seen: if that very pass
    goes non-finite there, the finding says that the output was changed in place before it was
    read. Modules inside a `torch.compile`d region
    do not run Python hooks and are not seen individually. The sums run in float32 (a float16
    sum would overflow at 65504), so only finite activations that add up past about 3e38 are
    reported; a layer skipped as finite-preserving could still overflow float32 by scaling
    values above about 1e36 (float16 outputs are always read). The reads cost about one pass
    over the activations that are not skipped on a watched pass: on a small CNN about 5% of a
    watched step, and a quarter of that averaged over steps after the warm-up. The opt-in
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
                        "root_forward", "root_forward_end", "finding"})
    #: only forwards with gradients on (training) are watched: inference calls cost no call
    forward_grad = True
    #: findings that say a non-finite value went through a step: from then on every training
    #: pass is watched, so that the next one is located
    ESCALATE = frozenset({"TA701", "TA702", "TA703"})
    options = {
        "warmup": Option(16, "training passes watched before sampling starts", int),
        "sample_every": Option(
            4,
            "after the warm-up, watch one training pass in N (1: every pass); every pass once a "
            "non-finite loss, gradient or parameter was found",
            int,
        ),
        "precise": Option(
            False,
            "after a non-finite output was found, run the next forward pass under a dispatch mode that "
            "names the first non-finite operation and its source line (slow for that one pass)",
            bool,
        ),
    }

    def setup(self) -> None:
        import os
        import sys

        import torch

        import torch_audit
        from torch_audit.runtime.check_helpers import (
            finite_preserving_parameters,
            parameters_to_read,
            user_site,
        )

        self._torch = torch
        self._tensor = torch.Tensor
        self._float32 = torch.float32
        self._user_site = user_site
        self._root_site = None
        self._parameters_to_read = parameters_to_read
        self._finite_preserving = finite_preserving_parameters
        self._getframe = sys._getframe
        self._torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
        self._module_py = torch.nn.modules.module.__file__
        self._wrapped_code = torch.nn.Module._wrapped_call_impl.__code__
        self._own_dirs = tuple(os.path.dirname(os.path.abspath(p)) for p in
                               (torch_audit.__file__, torch_audit.rules.__file__))
        #: id(code) -> code: the session's hooks and Module.__call__ (frames to pass over), and
        #: the functions that call modules (keyed by id: hashing a code object hashes its
        #: contents; the code objects are kept, so their ids are not reused)
        self._hook_codes: dict = {}
        self._caller_codes: dict = {}
        self._ref = weakref.ref
        #: id(module) -> (weak reference, whether its small outputs may be batched): a module's
        #: first outputs are read at once and watched; if code modified one in place after the
        #: module returned (before a batch would have read it), that module's outputs are read
        #: at once from then on, so that the value read is the value it returned
        self._batchable: dict = {id(None): _PARAMETERS}
        self._forwards = 0
        #: training passes that reached backward(), whether the current one is watched, and
        #: whether a non-finite value was found elsewhere (every pass is watched from then on)
        self._passes = 0
        self._watching = True
        self._escalated = False
        self._warmup = max(0, int(self.opts["warmup"]))
        self._every = max(1, int(self.opts["sample_every"]))
        self._draw = random.Random(704).random  # the same passes in every run
        self._armed = False
        self._mode = None
        self._closing = None  # the root module whose forward is returning
        self._forget()

    def close(self) -> None:
        self._forget()
        self._batchable = {id(None): _PARAMETERS}
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    # -- precise mode: one forward pass under a dispatch mode, after the sentinel fired --------
    def on_root_forward(self, module) -> None:
        # one frame walk per outermost forward: where the model is called, as a fallback location
        if self._p_tensors or self._watched:  # the last pass's root was not seen returning
            self._flush()
        if self._torch.is_grad_enabled():
            if not self._forwards:  # the first root forward of a training pass
                # drawn, not every N-th: passes of different kinds that alternate (a GAN's
                # discriminator and generator) would otherwise leave one kind never watched
                self._watching = (self._escalated or self._armed or self._passes < self._warmup
                                  or self._every == 1 or self._draw() < 1.0 / self._every)
            if self._watching:
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
        # the batch of the pass is reduced when the root's own output has been seen, next, in
        # on_forward: no output is held past its forward pass
        self._closing = module
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

    # The hot path: every module call of a training forward pass. Only Python bookkeeping runs
    # here (the tensor, its version, the module, the call site as a code object and offset),
    # in flat lists of plain values: objects that live through a forward pass are promoted by
    # the garbage collector, whose full collections then cost far more than the check itself.
    # Small outputs are reduced in batches (_flush).
    # long: the per-module hot path, inlined (a helper call per output costs more than its body)
    def on_forward(self, module, args, output) -> None:
        if not self._watching:  # forward_grad: the session calls this with gradients on only
            return
        tensor = self._tensor
        if isinstance(output, tensor):
            outputs = (output,)
        elif isinstance(output, (tuple, list)):
            outputs = output
        else:
            if module is self._closing:
                self._end_pass()
            return
        seen, seen_v = self._seen, self._seen_v
        state = self._batchable.get(id(module))
        batch = state is not None and state[1] and state[0]() is module
        start = self._count
        dtype = None  # of a single output: whether the module could have made it non-finite
        covered = False
        for t in outputs:
            if not isinstance(t, tensor) or not t.is_floating_point():
                continue
            n = t.numel()
            if not n:
                continue
            version = t._version
            key = id(t)
            held = seen.get(key)
            if held is not None and seen_v[key] == version and (
                    held is t or (type(held) is self._ref and held() is t)):
                continue  # read already (a container returning its child's output, an Identity)
            if len(outputs) == 1:
                dtype = t.dtype
                if self._covered_by_input(module, args, t):
                    seen[key], seen_v[key] = self._ref(t), version
                    covered = True
                    continue
            index = self._count
            self._count = index + 1
            if batch and n <= SMALL:
                self._p_tensors.append(t)
                self._p_versions.append(version)
                self._p_indices.append(index)
                self._p_modules.append(module)
                self._pending_elements += n
                seen[key], seen_v[key] = t, version  # held until the batch anyway
            else:
                self._read_now(t, n, version, module, state, index)
                seen[key], seen_v[key] = self._ref(t), version
        if covered or self._count != start:
            # the caller: past on_forward, the session's hook, Module._call_impl's inner and
            # _call_impl, when the call came through Module._wrapped_call_impl (else: a walk)
            frame = self._getframe(4)
            site = None
            if frame.f_code is self._wrapped_code:
                frame = frame.f_back
                code = frame.f_code
                if self._caller_codes.get(id(code)) is code:
                    site = code, frame.f_lasti
            self._r_modules.append(module)
            self._r_stops.append(self._count)
            self._r_sites.append(site or self._caller_site())
            self._r_dtypes.append(dtype)
            if len(self._p_tensors) >= MAX_PENDING or self._pending_elements >= MAX_PENDING_ELEMENTS:
                self._flush()
        if module is self._closing:  # the outermost module returned
            self._end_pass()

    def _end_pass(self) -> None:
        self._closing = None
        if self._p_tensors or self._watched:
            self._flush()

    def _caller_site(self):
        """``(code, offset)`` of the frame that called the module now returning, the line of
        this very call (a module used twice has two), turned into a line only for a finding
        (``_site``): a walk from the session's hook that passes over known frames (the hooks,
        ``Module.__call__``; a dictionary lookup each). ``on_forward`` finds known callers at
        a fixed depth first."""
        frame = self._getframe(3)  # _caller_site, on_forward, forward_post -> torch's frames
        skip, callers = self._hook_codes, self._caller_codes
        while frame is not None:
            code = frame.f_code
            key = id(code)
            if callers.get(key) is code:
                return code, frame.f_lasti
            if skip.get(key) is code:
                frame = frame.f_back
                continue
            path = code.co_filename
            if path == self._module_py or path.startswith(self._own_dirs):
                skip[key] = code
                frame = frame.f_back
                continue
            callers[key] = code
            return code, frame.f_lasti
        return None

    @staticmethod
    def _site(raw):
        """``(path, line)`` of a ``(code, offset)`` call site."""
        if raw is None:
            return None
        code, offset = raw
        for start, end, line in code.co_lines():
            if start <= offset < end:
                return code.co_filename, line if line is not None else code.co_firstlineno
        return code.co_filename, code.co_firstlineno

    def _read(self, t, module=None) -> None:
        """Schedule the float32 sum of ``t`` (NaN and ±inf propagate through it) under the
        next index of this forward pass's flags (``on_forward`` does the same inline)."""
        index = self._count
        self._count = index + 1
        n, version = t.numel(), t._version
        state = self._batchable.get(id(module))
        if n <= SMALL and state is not None and state[1] and state[0]() is module:
            self._p_tensors.append(t)
            self._p_versions.append(version)
            self._p_indices.append(index)
            self._p_modules.append(module)
            self._pending_elements += n
        else:
            self._read_now(t, n, version, module, state, index)

    def _read_now(self, t, n: int, version: int, module, state, index: int) -> None:
        """Read ``t`` now: a large output (while it is still in the cache), or a small one of
        a module whose outputs were changed in place after it returned, or of a module not
        seen before, which is also watched until the next batch for such a change."""
        self._eager.append(t.detach().sum(dtype=self._float32))
        self._eager_indices.append(index)
        if n <= SMALL and (state is None or state[0]() is not module):
            self._watched.append((t, version, module))
            if len(self._watched) >= MAX_PENDING:
                self._flush()

    def _flush(self) -> None:
        """Reduce the held outputs in one go (``_batch_sums``: stacked by shape, one sum
        each, under ``no_grad``: no graph and no ``detach()`` per tensor), and learn from the
        version counters which modules' outputs were changed in place after they returned."""
        batchable, ref = self._batchable, self._ref
        watched = self._watched
        if watched:
            self._watched = []
            for t, version, module in watched:
                changed = t._version != version
                entry = batchable.get(id(module))
                if changed or entry is None or entry[0]() is not module:
                    batchable[id(module)] = (ref(module), not changed)
        tensors = self._p_tensors
        if not tensors:
            return
        versions, indices, modules = self._p_versions, self._p_indices, self._p_modules
        self._p_tensors, self._p_versions, self._p_indices, self._p_modules = [], [], [], []
        self._pending_elements = 0
        seen = self._seen
        for t in tensors:  # no longer held: forget them (no weak reference to build)
            if seen.get(id(t)) is t:
                del seen[id(t)]
        now = [t._version for t in tensors]
        if now != versions:  # changed in place since: read as it is now, and learn
            for k, module in enumerate(modules):
                if now[k] != versions[k]:
                    self._changed.add(indices[k])
                    if module is not None:
                        batchable[id(module)] = (ref(module), False)
        with self._torch.no_grad():
            for sums, positions in _batch_sums(self._torch, tensors):
                self._parts.append(sums)
                if len(positions) == len(indices):
                    self._part_indices.extend(indices)
                else:
                    self._part_indices.extend([indices[p] for p in positions])

    def _covered_by_input(self, module, args, output) -> bool:
        """Whether ``output`` is finite whenever the module's input is, and the input is a
        module output read unchanged (see ``torch_audit.runtime.finite_preserving``); the module's
        parameters are then read instead."""
        params = self._parameters_to_read(module, output)
        if params is None or not args:
            return False
        x = args[0]
        key = id(x)
        held = self._seen.get(key)
        if held is None or not (held is x or (type(held) is self._ref and held() is x)):
            return False
        # an in-place module (ReLU(inplace=True)) bumps its input's version once itself; any
        # other change since the read (a user's `x.div_(0)` in between) means a fresh read
        expected = x._version - 1 if output is x and getattr(module, "inplace", False) else x._version
        if self._seen_v[key] != expected:
            return False
        for p in params:  # now: under FSDP a layer's parameters are gathered only in its forward
            self._read(p)
        return True

    def on_backward(self, event) -> None:
        # Only a small vector of flags survives the forward pass: large outputs were reduced
        # as they were produced, small ones in batches, so no activation is kept alive.
        if self._p_tensors or self._watched:
            self._flush()
        if self._forwards:
            self._passes += 1
        self._forwards = 0
        if not (self._count or self._r_modules or self._seen or self._changed):
            return  # an unwatched pass recorded nothing: nothing to hand over or forget
        records = (self._r_modules, self._r_stops, self._r_sites, self._r_dtypes)
        eager, parts = self._eager, self._parts
        order = self._eager_indices + self._part_indices
        changed = self._changed
        self._forget()
        if not records[0] or not (eager or parts):
            return
        torch = self._torch
        if eager:
            device = eager[0].device
            if any(e.device != device for e in eager):  # a model split over devices
                eager = [e.to(device, non_blocking=True) for e in eager]
            parts = [torch.stack(eager)] + parts
        device = parts[0].device
        if any(p.device != device for p in parts):  # a model split over devices
            parts = [p.to(device, non_blocking=True) for p in parts]
        flags = parts[0] if len(parts) == 1 else torch.cat(parts)
        if order == sorted(order):
            order = None  # positions are the indices
        # handed to the session's reads now: with an optimizer they are read at its step, as
        # they would be if held here; without one, held batches outlived the garbage
        # collector's young generations and made its full collections frequent
        meta, step = (records, order, changed), self.session.step
        self.defer(flags, lambda values: self._locate(values, meta, step))

    def _forget(self) -> None:
        """Drop what was recorded since the last backward."""
        self._r_modules, self._r_stops, self._r_sites, self._r_dtypes = [], [], [], []
        self._seen, self._seen_v, self._count = {}, {}, 0
        self._eager, self._eager_indices, self._watched = [], [], []
        self._p_tensors, self._p_versions, self._p_indices, self._p_modules = [], [], [], []
        self._pending_elements = 0
        self._parts, self._part_indices, self._changed = [], [], set()

    def on_finding(self, finding) -> None:
        if finding.code in self.ESCALATE:
            self._escalated = True

    def on_step_pre(self, ctx) -> None:
        self._forget()  # forward passes without backward: nothing to attribute

    def on_finish(self) -> None:
        self._forget()

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
        that uses it, or where the model was called (``site``: a ``(code, offset)`` pair)."""
        site = self._site(site)
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

    def _locate(self, values: list[float], meta: tuple, step: int) -> None:
        if all(map(math.isfinite, values)):
            return
        from torch_audit.runtime.check_helpers import is_torch_class

        (modules, stops, sites, dtypes), order, changed = meta
        meta = [(m, range(stops[k - 1] if k else 0, stop), site, dtype)
                for k, (m, stop, site, dtype) in enumerate(zip(modules, stops, sites, dtypes))]
        if order is not None:  # the flags of outputs read at once come first
            by_index = [0.0] * len(values)
            for position, i in enumerate(order):
                by_index[i] = values[position]
            values = by_index
        for k, (module, idx, site, dtype) in enumerate(meta):
            if all(math.isfinite(values[i]) for i in idx):
                continue
            blameless = dtype is not None and self._blameless(module, dtype)
            if blameless and any(i in changed for i in idx):
                # read after code changed it in place; from a finite input (every output
                # before it was finite) this module returned a finite value: that code made it
                continue
            if self.opts["precise"]:
                self._armed = True
            if blameless:
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
            if any(i in changed for i in idx):
                where += (" (its output was changed in place after the call, before it was read: "
                          "that code may have made the value)")
            self.report(name, step=step, module=name, path=path, line=line, value="non-finite",
                        message=self.message.format(module=name, cls=cls, where=where))
            return


def _batch_sums(torch, tensors: tuple) -> list:
    """One float32 sum per tensor (NaN and ±inf propagate through a sum), computed without a
    host synchronisation and under the caller's ``no_grad``: ``(sums, positions)`` pairs, a
    vector of sums and the positions in ``tensors`` they belong to. Tensors of one shape are
    stacked and summed with two kernels however many there are (grouped first: a failed
    ``stack`` raises, and torch's errors are slow to build); a shape seen once is summed
    alone."""
    float32 = torch.float32
    groups: dict = {}
    for i, t in enumerate(tensors):
        shape = t.shape
        group = groups.get(shape)
        if group is None:
            groups[shape] = [i]
        else:
            group.append(i)
    out = []
    for positions in groups.values():
        if len(positions) == 1:
            out.append((tensors[positions[0]].sum(dtype=float32).reshape(1), positions))
            continue
        part = [tensors[i] for i in positions]
        try:
            out.append((torch.stack(part).view(len(part), -1).sum(1, dtype=float32), positions))
        except RuntimeError:  # one shape on several devices (a model split over devices)
            out.extend((t.sum(dtype=float32).reshape(1), [i]) for t, i in zip(part, positions))
    return out
