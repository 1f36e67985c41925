"""``torch-audit run model.py:build``: profile one forward and one backward pass of a model.

``build()`` returns a module, or ``(module, example_inputs)``, or ``(module, example_inputs,
loss_fn)``; ``--input-shape`` (repeatable, ``8,3,32,32`` or ``8,128:int64``) with ``--dtype``
provides inputs otherwise. Inputs are a tensor, a tuple/list of positional inputs, or a dict of
keyword inputs. The backward pass starts from ``loss_fn(output)``, else from the output when it is
a scalar (or has a ``loss`` key/attribute), else from the sum of all floating outputs.

Per module (inclusive of its children, like the FLOP counter's hierarchy): forward calls,
parameters, output shapes, forward and backward time, forward and backward FLOPs
(:class:`torch.utils.flop_counter.FlopCounterMode`) and peak memory. Times are the summed
durations of the module's tensor operations (measured by a dispatch mode below the FLOP counter,
so its bookkeeping is not included; on CUDA with events). Peak memory is the CUDA allocator's
``memory_allocated`` high-water mark on a GPU; on CPU it is the high-water mark of live storages
allocated by the pass plus the parameters, buffers and inputs (PyTorch keeps no CPU allocator
statistics). The runtime checks audit the pass (a probe optimizer whose ``step()`` changes nothing
lets the step checks look at the gradients).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ProfileError", "ModuleStats", "Profile", "profile_model", "load_builder", "parse_shape",
           "run_profile_command"]


class ProfileError(Exception):
    """A problem with the profile target or its inputs (exit status 2)."""


DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def parse_dtype(text: str) -> torch.dtype:
    key = text.strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ProfileError(f"unknown dtype {text!r} (expected one of: {', '.join(sorted(set(DTYPES)))})")
    return DTYPES[key]


def parse_shape(text: str, default_dtype: torch.dtype) -> tuple[tuple[int, ...], torch.dtype]:
    """``8,3,32,32`` / ``8x3x32x32`` / ``(8, 3)`` / ``8,128:int64`` → (shape, dtype)."""
    shape_text, _, dtype_text = text.partition(":")
    dtype = parse_dtype(dtype_text) if dtype_text else default_dtype
    cleaned = re.sub(r"(?<=\d)\s*[x×]\s*(?=\d)", ",", shape_text.strip().strip("()[]"))
    parts = [p.strip() for p in cleaned.split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ProfileError(f"--input-shape expects comma-separated integers like 8,3,32,32, got {text!r}") from None
    if any(n < 0 for n in shape):
        raise ProfileError(f"--input-shape has a negative size: {text!r}")
    return shape, dtype


def make_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype).to(device)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool().to(device)
    return torch.randint(0, 2, shape, generator=gen, dtype=dtype).to(device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ProfileError("--device cuda: no CUDA device is available")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# loading the builder
# ----------------------------------------------------------------------------------------------


def load_builder(where: str, attr: str, argv: list[str] | None = None) -> Callable[[], Any]:
    """Import ``where`` (a ``.py`` file, put first on ``sys.path`` like a script, or a dotted
    module name) and return its attribute ``attr`` (dotted names allowed)."""
    if where.endswith(".py") or os.path.exists(where):
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise ProfileError(f"can't open file {path!r}: no such file")
        folder = os.path.dirname(os.path.realpath(path))
        sys.path.insert(0, folder) if not sys.path or sys.path[0] != folder else None
        stem = Path(path).stem
        name = stem if stem.isidentifier() and stem not in sys.modules else "__torch_audit_profile__"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover
            raise ProfileError(f"cannot import {where}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.argv = [where, *(argv or [])]
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            raise ProfileError(f"no module named {where!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProfileError(f"{where} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ProfileError(f"{where}:{attr} is not callable")
    return obj


def unpack_build(result: Any) -> tuple[nn.Module, Any, Callable | None]:
    """``module`` | ``(module, inputs)`` | ``(module, inputs, loss_fn)``."""
    if isinstance(result, nn.Module):
        return result, None, None
    if isinstance(result, (tuple, list)) and result and isinstance(result[0], nn.Module):
        if len(result) == 2:
            return result[0], result[1], None
        if len(result) == 3 and (result[2] is None or callable(result[2])):
            return result[0], result[1], result[2]
    raise ProfileError(
        "the build function must return an nn.Module, (module, example_inputs) or "
        f"(module, example_inputs, loss_fn); got {type(result).__name__}"
    )


def split_inputs(inputs: Any) -> tuple[tuple, dict]:
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModuleStats:
    name: str  # qualified name; "" is the model itself
    type: str
    depth: int
    params: int
    calls: int = 0
    output_shapes: list[list[int]] = dataclasses.field(default_factory=list)
    forward_ms: float = 0.0  # the median of the measured repeats
    backward_ms: float = 0.0
    #: each measured repeat's times (after a warm-up pass)
    forward_ms_runs: list[float] = dataclasses.field(default_factory=list)
    backward_ms_runs: list[float] = dataclasses.field(default_factory=list)
    forward_flops: int = 0
    backward_flops: int = 0
    peak_memory: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "depth": self.depth,
            "calls": self.calls,
            "params": self.params,
            "output_shapes": self.output_shapes,
            "forward_ms": round(self.forward_ms, 4),
            "backward_ms": round(self.backward_ms, 4),
            "forward_flops": self.forward_flops,
            "backward_flops": self.backward_flops,
            "peak_memory_bytes": self.peak_memory,
        }


@dataclasses.dataclass
class Profile:
    model: str
    device: str
    inputs: list[dict[str, Any]]
    modules: list[ModuleStats]
    totals: ModuleStats
    backward_from: str
    findings: list[Any] = dataclasses.field(default_factory=list)
    #: measured passes after the warm-up; times are their medians
    repeats: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "inputs": self.inputs,
            "backward_from": self.backward_from,
            "repeats": self.repeats,
            "totals_include": f"the backward's root: {self.backward_from}",
            "modules": [m.to_dict() for m in self.modules],
            "totals": self.totals.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }


class _OpStats(TorchDispatchMode):
    """Times every operation and tracks live memory, attributing both to the modules that the
    FLOP counter's module tracker says are active (forward or backward)."""

    def __init__(self, tracker: Any, device: torch.device) -> None:
        super().__init__()
        self.tracker = tracker
        self.cuda = device.type == "cuda"
        self.fwd: dict[str, float] = {}
        self.bwd: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.events: list[tuple[Any, Any, tuple[str, ...], bool]] = []
        self.live: dict[int, int] = {}
        self.live_bytes = 0
        self.max_live = 0
        self.baseline = 0
        self._finalizers: list[weakref.finalize] = []

    def _release(self, key: int) -> None:
        self.live_bytes -= self.live.pop(key, 0)

    def _track(self, out: Any) -> None:
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            try:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                size = storage.nbytes()
            except Exception:
                continue
            if not key or key in self.live or size == 0:
                continue
            self.live[key] = size
            self.live_bytes += size
            self._finalizers.append(weakref.finalize(storage, self._release, key))
        self.max_live = max(self.max_live, self.live_bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        parents = tuple(self.tracker.parents)
        is_bw = bool(self.tracker.is_bw)
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = func(*args, **kwargs)
            end.record()
            self.events.append((start, end, parents, is_bw))
            mem = torch.cuda.memory_allocated()
        else:
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            ms = (time.perf_counter() - t0) * 1e3
            table = self.bwd if is_bw else self.fwd
            for p in parents:
                table[p] = table.get(p, 0.0) + ms
            self._track(out)
            mem = self.baseline + self.live_bytes
        for p in parents:
            if mem > self.peak.get(p, 0):
                self.peak[p] = mem
        return out

    def finish(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            for start, end, parents, is_bw in self.events:
                ms = start.elapsed_time(end)
                table = self.bwd if is_bw else self.fwd
                for p in parents:
                    table[p] = table.get(p, 0.0) + ms
            self.events = []
        for f in self._finalizers:
            f.detach()
        self._finalizers = []


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        try:
            st = t.untyped_storage()
        except Exception:
            continue
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
    return total


class _NodeParents(TorchFunctionMode):
    """Backward attribution by autograd node. torch's module tracker charges a backward
    operation to the modules whose backward is "open", and a module stays open until the
    gradients of all its inputs are done: a branch whose input is shared (a residual block's
    downsample) stays open while the other branch's backward runs and is charged for it. This
    mode, above autograd, records for every autograd node made in the forward pass the modules
    that were running when it was made; :class:`_AttributingTracker` charges each backward
    operation to those of the node being executed (``torch._C._current_autograd_node()``)."""

    def __init__(self, tracker: Any) -> None:
        super().__init__()
        self.tracker = tracker
        self.nodes: dict[Any, frozenset[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.tracker.is_bw and torch.is_grad_enabled():
            parents: frozenset[str] | None = None
            stack = [t.grad_fn for t in tree_flatten(out)[0]
                     if isinstance(t, torch.Tensor) and t.grad_fn is not None]
            while stack:  # the output's node and the new nodes behind it (composite functions)
                node = stack.pop()
                if node is None or node in self.nodes:
                    continue
                if parents is None:
                    parents = frozenset(self.tracker.parents)
                self.nodes[node] = parents
                stack.extend(n for n, _ in node.next_functions)
        return out


class _AttributingTracker:
    """The FLOP counter's module tracker, with ``parents`` in backward taken from the node being
    executed (see :class:`_NodeParents`); everything else is the tracker's."""

    def __init__(self, tracker: Any, nodes: dict[Any, frozenset[str]]) -> None:
        self._tracker = tracker
        self._nodes = nodes

    @property
    def parents(self) -> Any:
        if self._tracker.is_bw:
            found = self._nodes.get(torch._C._current_autograd_node())
            if found is not None:
                return found
        return self._tracker.parents

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return 0.0
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


class _ProbeOptimizer(torch.optim.Optimizer):
    """An optimizer whose ``step()`` changes nothing; calling it fires the global step hooks so
    that the runtime checks look at the gradients of the profiled pass."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__(params, {"lr": 0.0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        return None


def _shapes(output: Any) -> list[list[int]]:
    return [list(t.shape) for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]


SUM_OF_OUTPUTS = "the sum of the outputs"


def backward_root(output: Any, loss_fn: Callable | None) -> tuple[torch.Tensor | None, str]:
    """The tensor to call ``backward()`` on, and a description of where it came from."""
    if loss_fn is not None:
        loss = loss_fn(output)
        return loss, "loss_fn(output)"
    if isinstance(output, torch.Tensor) and output.numel() == 1 and output.requires_grad:
        return output, "the scalar output (a loss)"
    loss = None
    if isinstance(output, dict) and isinstance(output.get("loss"), torch.Tensor):
        loss = output["loss"]
    elif isinstance(getattr(output, "loss", None), torch.Tensor):
        loss = output.loss
    if loss is not None and loss.requires_grad:
        return loss, "output.loss"
    leaves = [t for t in tree_flatten(output)[0]
              if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
    if not leaves:
        return None, "nothing (no output requires grad)"
    total = leaves[0].float().sum()
    for t in leaves[1:]:
        total = total + t.float().sum()
    return total, SUM_OF_OUTPUTS


def profile_model(
    model: nn.Module,
    inputs: Any,
    *,
    loss_fn: Callable | None = None,
    device: torch.device | str = "cpu",
    audit_options: dict[str, Any] | None = None,
    repeats: int = 5,
    selection: Any = None,
) -> Profile:
    """Profile one forward and one backward of ``model`` on ``inputs``: one pass under an audit
    session, a warm-up pass, then ``repeats`` measured passes (times are their medians).
    ``selection`` (a resolved ``RuntimeSelection``) chooses the checks, else ``audit_options``
    are :func:`torch_audit.audit`'s keyword arguments."""
    device = torch.device(device)
    model = model.to(device)
    inputs = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, inputs)
    args, kwargs = split_inputs(inputs)
    names, stats = _module_stats(model)

    def post_hook(mod: nn.Module, _args: Any, output: Any) -> None:
        s = stats.get(names.get(mod, None))  # type: ignore[arg-type]
        if s is None:
            return
        s.calls += 1
        if not s.output_shapes:
            s.output_shapes = _shapes(output)

    root_type = type(model).__name__
    baseline = _storage_bytes(
        [*model.parameters(), *model.buffers(),
         *(t for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor))]
    )
    findings = _audited_pass(model, args, kwargs, loss_fn, selection, audit_options)
    # Then, without audit hooks whose work would be counted: a warm-up pass (first calls pay
    # for lazy initialisation, caches, the dispatch modes' own set-up), and ``repeats``
    # measured passes whose median times are reported. FLOPs, peak memory, calls and shapes
    # are those of the first measured pass (the same in every pass).
    runs = []
    for i in range(1 + max(1, repeats)):
        runs.append(_measured_pass(model, args, kwargs, loss_fn, device, baseline,
                                   hooks=post_hook if i == 1 else None))
    runs = runs[1:]
    for name, s in stats.items():
        _fill(s, runs, root_type if not name else f"{root_type}.{name}")
    # the whole pass: the model and the backward's root (loss_fn, output.loss or the sum)
    totals = ModuleStats(name="total", type="", depth=0, params=stats[""].params,
                         calls=sum(s.calls for s in stats.values()))
    _fill(totals, runs, "Global")
    totals.peak_memory = runs[0].peak_memory
    input_desc = [
        {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)
    ]
    return Profile(
        model=root_type, device=str(device), inputs=input_desc, modules=list(stats.values()),
        totals=totals, backward_from=runs[0].source,
        findings=_meaningful(findings, model, runs[0].source), repeats=len(runs),
    )


def _module_stats(model: nn.Module) -> tuple[dict[nn.Module, str], dict[str, ModuleStats]]:
    """Each module's qualified name, and its (empty) statistics by name."""
    names: dict[nn.Module, str] = {}
    stats: dict[str, ModuleStats] = {}
    for name, mod in model.named_modules():
        names[mod] = name
        stats[name] = ModuleStats(
            name=name, type=type(mod).__name__, depth=0 if not name else name.count(".") + 1,
            params=sum(p.numel() for p in mod.parameters()),
        )
    return names, stats


def _audited_pass(model: nn.Module, args: tuple, kwargs: dict, loss_fn: Callable | None,
                  selection: Any, audit_options: dict[str, Any] | None) -> list:
    """Pass 1, audited: the runtime checks see the model as built (and warm it up); a probe
    optimizer whose ``step()`` changes nothing lets the step checks see the gradients."""
    if selection is not None:  # resolved once by the command (a RuntimeSelection)
        from torch_audit.runtime.session import AuditSession

        session = AuditSession(model, selection=selection, **(audit_options or {}))
    else:
        from torch_audit.runtime.session import audit

        session = audit(model=model, **(audit_options or {}))
    with session:
        output = model(*args, **kwargs)
        root, _source = backward_root(output, loss_fn)
        if root is not None:
            root.backward()
            trainable = [p for p in model.parameters() if p.requires_grad]
            if trainable:
                _ProbeOptimizer(trainable).step()
    del output, root
    for p in model.parameters():
        p.grad = None
    return list(session.findings)


def _fill(s: ModuleStats, runs: list, key: str) -> None:
    """Times (medians of the measured runs), FLOPs and peak memory of ``key`` in the runs."""
    first = runs[0]
    s.forward_ms_runs = [r.ops.fwd.get(key, 0.0) for r in runs]
    s.backward_ms_runs = [r.ops.bwd.get(key, 0.0) for r in runs]
    s.forward_ms = _median(s.forward_ms_runs)
    s.backward_ms = _median(s.backward_ms_runs)
    s.forward_flops = first.fwd_counts.get(key, 0)
    s.backward_flops = first.total_counts.get(key, 0) - s.forward_flops
    s.peak_memory = first.ops.peak.get(key, 0)


def _meaningful(findings: list, model: nn.Module, source: str) -> list:
    """The audited pass's findings without those the profile itself caused."""
    if not model.training:
        # the probe step is no training step: a model profiled in eval mode is not a bug
        findings = [f for f in findings if f.name != "training-in-eval-mode"]
    if source == SUM_OF_OUTPUTS:
        # the gradient of a made-up loss (the sum of every output) has no meaningful size: a
        # norm above max_norm says nothing about training
        findings = [f for f in findings if f.name != "exploding-gradient"]
    return findings


@dataclasses.dataclass
class _Pass:
    ops: _OpStats
    fwd_counts: dict[str, int]
    total_counts: dict[str, int]
    peak_memory: int
    source: str


def _measured_pass(model: nn.Module, args: tuple, kwargs: dict, loss_fn: Callable | None,
                   device: torch.device, baseline: int, hooks: Callable | None) -> _Pass:
    """One forward and backward under the FLOP counter and the op timer."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    flops = FlopCounterMode(display=False)
    nodes = _NodeParents(flops.mod_tracker)
    tracker = _AttributingTracker(flops.mod_tracker, nodes.nodes)
    flops.mod_tracker = tracker  # our own counter's attribute: backward by autograd node
    ops = _OpStats(tracker, device)
    ops.baseline = baseline
    handles = [m.register_forward_hook(hooks) for m in model.modules()] if hooks else []
    try:
        with ops, flops, nodes:
            output = model(*args, **kwargs)
            root, source = backward_root(output, loss_fn)
            # the forward's FLOPs include the backward's root (loss_fn, the sum): "total" says so
            fwd_counts = {k: sum(v.values()) for k, v in flops.get_flop_counts().items()}
            if root is not None:
                root.backward()
    finally:
        for h in handles:
            h.remove()
        ops.finish()
    del output, root
    for p in model.parameters():
        p.grad = None
    total_counts = {k: sum(v.values()) for k, v in flops.get_flop_counts().items()}
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else ops.baseline + ops.max_live
    nodes.nodes.clear()
    return _Pass(ops, fwd_counts, total_counts, peak, source)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------


def human_count(n: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


def human_bytes(n: float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def _shape_text(shapes: list[list[int]]) -> str:
    if not shapes:
        return "-"
    text = ", ".join("[" + ",".join(map(str, s)) + "]" for s in shapes[:2])
    return text + (", …" if len(shapes) > 2 else "")


def total_label(backward_from: str) -> str:
    """The totals row's name: the whole pass includes the backward's root, which is no module
    (the loss function, or the sum the profile made up)."""
    if backward_from == "loss_fn(output)":
        return "total (incl. loss)"
    if backward_from == SUM_OF_OUTPUTS:
        return "total (incl. sum)"
    return "total"


def table_rows(profile: Profile) -> list[list[str]]:
    rows = []
    for s in profile.modules:
        label = ("  " * s.depth) + (s.name.rsplit(".", 1)[-1] if s.name else profile.model)
        rows.append([
            label, s.type, str(s.calls), human_count(s.params), _shape_text(s.output_shapes),
            f"{s.forward_ms:.3f}", f"{s.backward_ms:.3f}", human_count(s.forward_flops),
            human_count(s.backward_flops), human_bytes(s.peak_memory),
        ])
    t = profile.totals
    rows.append([
        total_label(profile.backward_from), "", str(t.calls), human_count(t.params), "", f"{t.forward_ms:.3f}",
        f"{t.backward_ms:.3f}", human_count(t.forward_flops), human_count(t.backward_flops),
        human_bytes(t.peak_memory),
    ])
    return rows


HEADERS = ["module", "type", "calls", "params", "output", "fwd ms", "bwd ms", "fwd FLOPs",
           "bwd FLOPs", "peak mem"]


def render_table(profile: Profile) -> str:
    rows = table_rows(profile)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    left = {0, 1, 4}

    def fmt(row: list[str]) -> str:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    inputs = ", ".join(f"{d['dtype']}[{','.join(map(str, d['shape']))}]" for d in profile.inputs) or "none"
    lines = [
        f"{profile.model} on {profile.device}; inputs: {inputs}; backward from {profile.backward_from}; "
        f"times: median of {profile.repeats} passes after a warm-up",
        fmt(HEADERS), sep, *(fmt(r) for r in rows[:-1]), sep, fmt(rows[-1]),
    ]
    return "\n".join(lines) + "\n"
