"""The runtime auditor under stress: faults injected inside an audited training loop, checks that
raise, Ctrl-C, models changed mid-run, long runs, DDP with a failing rank, and scripts with
DataLoader workers, torch.compile, bf16 autocast and activation checkpointing.

The promise checked everywhere: training proceeds exactly as without torch-audit (parameters,
optimizer state and RNG state bitwise equal to an unaudited run with the same seed), the findings
stay correct, and every hook and patch is gone afterwards.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime.session import active_session

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
#: Known gaps, kept as strict xfails: each flips to a failure (remove the mark) once fixed.
XFAIL_INDEX = (
    "the session's ModelIndex is built when a root model first runs; modules and parameters "
    "added or replaced later in the session are unknown to it, so param-not-in-optimizer misses them"
)


# -- the global state a session may touch ---------------------------------------------------------


def global_state() -> dict:
    """Everything a session installs or patches, by identity, to compare before and after."""
    from torch.nn.modules import module as m
    from torch.optim import optimizer as o
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    hook_dicts = {
        name: tuple(getattr(m, name).keys())
        for name in dir(m)
        if name.startswith("_global_") and isinstance(getattr(m, name), dict)
    }
    hook_dicts.update(
        {name: tuple(getattr(o, name).keys()) for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")}
    )
    patched = {
        "autograd.backward": torch.autograd.backward,
        "Tensor.backward": torch.Tensor.backward,
        "F.cross_entropy": F.cross_entropy,
        "F.relu": F.relu,
        "F.softmax": F.softmax,
        "Optimizer.zero_grad": torch.optim.Optimizer.__dict__["zero_grad"],
        "Module.zero_grad": nn.Module.__dict__["zero_grad"],
        "Module.__call__": nn.Module.__call__,
    }
    return {
        "hooks": hook_dicts,
        "patched": {k: id(v) for k, v in patched.items()},
        "dispatch_mode": _get_current_dispatch_mode(),
        "function_modes": torch._C._len_torch_function_stack(),
        "grad_enabled": torch.is_grad_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
    }


def module_hooks(model: nn.Module) -> list:
    out = []
    for name, mod in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(mod, attr):
                out.append((name, attr))
    for name, p in model.named_parameters():
        if getattr(p, "_post_accumulate_grad_hooks", None) or p._backward_hooks:
            out.append((name, "param hooks"))
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: intra-op threads only spin (20x the CPU time on a busy 2-core machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _clean_global_state():
    assert active_session() is None
    before = global_state()
    yield
    assert active_session() is None
    assert global_state() == before


# -- a seeded training loop with injectable faults ------------------------------------------------


class Flaky(nn.Module):
    """A layer whose forward raises on the steps listed in ``fail_on``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.fail_on: set[int] = set()
        self.step = 0

    def forward(self, x):
        if self.step in self.fail_on:
            raise RuntimeError(f"flaky forward at step {self.step}")
        return self.lin(x)


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fail):
        ctx.fail = fail
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.fail:
            raise RuntimeError("backward failed")
        return grad, None


class FlakySGD(torch.optim.SGD):
    fail_on: set[int] = set()
    calls = 0

    def step(self, closure=None):
        self.calls += 1
        if self.calls - 1 in self.fail_on:
            raise RuntimeError("step failed")
        return super().step(closure)


def make_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), Flaky(16), nn.Dropout(0.2), nn.Linear(16, 4)
    )


def train(steps: int = 8, *, fault: str | None = None, at: int = 3, nan_at: int | None = None,
          on_step=None, seed: int = 0):
    """A user's loop that survives a failing batch (``try/except: continue``), as real loops do.

    Returns (model, optimizer, outcomes) where outcomes records what each step did."""
    model = make_model(seed)
    opt = FlakySGD(model.parameters(), lr=0.05, momentum=0.9)
    opt.fail_on = {at} if fault == "step" else set()
    flaky = model[3]
    flaky.fail_on = {at} if fault == "forward" else set()
    g = torch.Generator().manual_seed(seed + 1)
    outcomes = []
    for step in range(steps):
        flaky.step = step
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        if nan_at == step:
            x[0, 0] = float("nan")
        if on_step is not None:
            model, opt = on_step(step, model, opt)
        try:
            opt.zero_grad()
            out = model(x)
            out = _FailingBackward.apply(out, fault == "backward" and step == at)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            outcomes.append("ok")
        except RuntimeError as exc:
            outcomes.append(str(exc))
    return model, opt, outcomes


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    state = {f"param:{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            state[f"opt:{i}:{k}"] = torch.as_tensor(v).clone()
    state["rng"] = torch.get_rng_state()
    return state


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        # bytes, not values: NaN != NaN, and -0.0 == 0.0 would hide a difference
        x, y = a[k].contiguous(), b[k].contiguous()
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), k


def run_both(**kwargs):
    """The same loop without and with an audit session; returns (plain, audited, session)."""
    model, opt, outcomes = train(**kwargs)
    plain = (snapshot(model, opt), outcomes)
    with torch_audit.audit(select=["ALL"], preview=True) as session:
        model2, opt2, outcomes2 = train(**kwargs)
    assert module_hooks(model2) == []
    return plain, (snapshot(model2, opt2), outcomes2), session


def codes_at(session) -> set[tuple[str, int]]:
    return {(f.code, f.step) for f in session.findings}


# -- fault injection ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["forward", "backward", "step"])
def test_exception_in_the_loop_changes_nothing_and_later_findings_are_right(fault):
    (ref, ref_out), (got, got_out), session = run_both(fault=fault, at=3, nan_at=6)
    assert got_out == ref_out
    assert got_out[3] != "ok" and got_out.count("ok") == 7  # the fault really happened, once
    assert_bitwise_equal(ref, got)
    # the NaN batch of loop iteration 6 is still reported, at the right step
    # (the session counts optimizer steps: the faulty step 3 never stepped, so batch 6 is step 5)
    expected_step = 5
    found = codes_at(session)
    assert ("TA701", expected_step) in found, session.report()
    nan_act = [f for f in session.findings if f.code == "TA704"]
    assert nan_act and nan_act[0].module == "0" and nan_act[0].step == expected_step
    assert not [f for f in session.findings if f.code == "TA799"], session.report()


def test_clean_run_reports_nothing_so_the_fault_tests_can_fail():
    (ref, _), (got, outcomes), session = run_both()
    assert outcomes == ["ok"] * 8
    assert_bitwise_equal(ref, got)
    assert session.findings == []


def _runtime_checks():
    from torch_audit.catalog import load_catalog
    from torch_audit.runtime.check import RuntimeCheck

    # the checks that select=ALL, preview=True enables (opt-in ones need naming)
    return [
        r for r in load_catalog().of_kind("runtime")
        if issubclass(r, RuntimeCheck) and r.events and not r.opt_in
    ]


@pytest.mark.parametrize("check", _runtime_checks(), ids=lambda r: r.name)
def test_a_check_that_raises_is_disabled_and_harms_nothing(check, monkeypatch):
    """Every hook method of one check raises; training is unchanged, the check reports one
    internal finding, every other check still works."""
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise ZeroDivisionError(f"injected fault in {type(self).__name__}")

    for attr in dir(check):
        if attr.startswith("on_") and callable(getattr(check, attr)):
            monkeypatch.setattr(check, attr, broken)
    (ref, ref_out), (got, got_out), session = run_both(nan_at=5)
    assert got_out == ref_out == ["ok"] * 8
    assert_bitwise_equal(ref, got)
    assert len(calls) == 1, "the check was not disabled after its first failure"
    internal = [f for f in session.findings if f.code == "TA799"]
    assert [f.message.split(" raised")[0] for f in internal] == [f"check {check.name} ({check.code})"]
    assert "injected fault" in internal[0].message
    assert check.code not in {f.code for f in session.findings}
    others = {"TA701", "TA702", "TA703", "TA704"} - {check.code}
    assert others <= set(session.codes), session.report()


@pytest.mark.parametrize("phase", ["setup", "close"])
def test_a_check_that_fails_to_set_up_or_close_harms_nothing(phase, monkeypatch):
    from torch_audit.rules.runtime.nonfinite_loss import NonFiniteLoss

    def broken(self):
        raise RuntimeError(f"{phase} broke")

    monkeypatch.setattr(NonFiniteLoss, phase, broken)
    (ref, _), (got, _), session = run_both(nan_at=2)
    assert_bitwise_equal(ref, got)
    if phase == "setup":  # disabled from the start, reported
        assert ("TA799", 0) in codes_at(session) and "TA701" not in session.codes
    else:  # close runs after the findings are in
        assert "TA701" in session.codes


def test_keyboard_interrupt_in_forward_propagates_and_cleans_up():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def interrupt(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    handle = model[3].register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        with torch_audit.audit() as session:
            for _ in range(5):
                opt.zero_grad()
                F.cross_entropy(model(torch.randn(4, 8)), torch.zeros(4, dtype=torch.long)).backward()
                opt.step()
    handle.remove()
    assert session.step == 2
    assert module_hooks(model) == []
    # a new session works straight away
    with torch_audit.audit() as again:
        model(torch.randn(4, 8)).sum().backward()
    assert again.findings == []


def test_keyboard_interrupt_inside_a_check_is_not_swallowed(monkeypatch):
    from torch_audit.rules.runtime.nonfinite_gradient import NonFiniteGradient

    def interrupt(self, ctx):
        if ctx.step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(NonFiniteGradient, "on_step_pre", interrupt)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt):
        with torch_audit.audit():
            for _ in range(3):
                opt.zero_grad()
                model(torch.randn(4, 8)).sum().backward()
                opt.step()


def test_model_grown_and_optimizer_rebuilt_mid_run():
    """Layers added at step 3 and the optimizer rebuilt for them: identical training, silence."""

    def grow(step, model, opt):
        if step == 3:
            model.append(nn.ReLU())
            model.append(nn.Linear(4, 4))
            opt = FlakySGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt

    (ref, _), (got, _), session = run_both(on_step=grow)
    assert any(k.startswith("param:7.") for k in got)  # the new layer trained
    assert_bitwise_equal(ref, got)
    assert [f for f in session.findings if f.severity.value == "error"] == [], session.report()


def test_model_grown_without_rebuilding_the_optimizer_is_reported():
    """The bug param-not-in-optimizer exists for, made inside the session."""

    def grow(step, model, opt):
        if step == 3:
            model.append(nn.Linear(4, 4))
        return model, opt

    (ref, _), (got, _), session = run_both(on_step=grow)
    assert_bitwise_equal(ref, got)
    [f] = [f for f in session.findings if f.code == "TA802"]
    assert "6.weight" in f.message and "6.bias" in f.message, f.message


def test_parameter_dtype_changed_mid_run():
    """model.double() between steps (parameters keep their identity, the optimizer follows)."""

    def to_double(step, model, opt):
        if step == 4:
            model.double()
            opt = FlakySGD(model.parameters(), lr=0.05)  # momentum buffers would be float32
        return model, opt

    def run(audited):
        torch.manual_seed(0)
        model = make_model()
        opt = FlakySGD(model.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(1)

        def loop():
            nonlocal model, opt
            for step in range(8):
                model, opt = to_double(step, model, opt)
                dtype = next(model.parameters()).dtype
                x, y = torch.randn(16, 8, generator=g, dtype=dtype), torch.randint(0, 4, (16,), generator=g)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

        if audited:
            with torch_audit.audit(select=["ALL"], preview=True) as session:
                loop()
            return snapshot(model, opt), session
        loop()
        return snapshot(model, opt), None

    ref, _ = run(False)
    got, session = run(True)
    assert ref["param:0.weight"].dtype == torch.float64
    assert_bitwise_equal(ref, got)
    assert "TA799" not in session.codes, session.report()


def test_parameter_replaced_by_a_new_tensor_mid_run_is_reported():
    """``layer.weight = nn.Parameter(...)`` after the optimizer was built: the new weight gets
    gradients the optimizer never applies."""

    def replace(step, model, opt):
        if step == 2:
            with torch.no_grad():
                model[5].weight = nn.Parameter(model[5].weight.clone())
        return model, opt

    (ref, _), (got, _), session = run_both(on_step=replace)
    assert_bitwise_equal(ref, got)
    [f] = [f for f in session.findings if f.code == "TA802"]
    assert "5.weight" in f.message, f.message


def test_module_shared_by_two_models():
    """One encoder inside two models with their own optimizers (as in a siamese or GAN set-up):
    identical training; a NaN fed to the second model is reported against the shared encoder."""

    def run(audited, nan_model=None):
        torch.manual_seed(0)
        encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        a = nn.Sequential(encoder, nn.Linear(16, 2))
        b = nn.Sequential(encoder, nn.Linear(16, 3))
        oa = torch.optim.Adam(a.parameters(), lr=1e-2)
        ob = torch.optim.SGD(b[1].parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)

        def loop():
            for step in range(6):
                for model, opt, k in ((a, oa, 2), (b, ob, 3)):
                    x = torch.randn(8, 8, generator=g)
                    if nan_model == k and step == 4:
                        x[0, 0] = float("nan")
                    opt.zero_grad()
                    F.cross_entropy(model(x), torch.randint(0, k, (8,), generator=g)).backward()
                    opt.step()

        session = None
        if audited:
            with torch_audit.audit(select=["ALL"], preview=True) as session:
                loop()
        else:
            loop()
        state = {**snapshot(a, oa), **{f"b:{k}": v for k, v in snapshot(b, ob).items()}}
        return state, session

    ref, _ = run(False)
    got, session = run(True)
    assert_bitwise_equal(ref, got)
    assert session.findings == [], session.report()
    _, session = run(True, nan_model=3)
    act = [f for f in session.findings if f.code == "TA704"]
    # first the shared encoder's Linear (fed the NaN); later b's own head, whose weights the
    # NaN gradients reached through SGD: two subjects, each reported once
    assert act[0].module is not None and act[0].module.endswith("0.0"), session.report()
    assert "Linear" in act[0].message
    assert len(act) == len({f.module for f in act})


def test_two_models_of_the_same_class_get_distinct_names():
    encoder = nn.Linear(8, 8)
    a, b = nn.Sequential(encoder, nn.Linear(8, 2)), nn.Sequential(encoder, nn.Linear(8, 3))
    with torch_audit.audit() as session:
        a(torch.randn(2, 8)).sum().backward()
        b(torch.randn(2, 8)).sum().backward()
        names = session.index.name(a[1]), session.index.name(b[1])
    assert names[0] != names[1], names


# -- long runs ------------------------------------------------------------------------------------


def _tiny_loop(steps: int, model, opt, x, y):
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        # a finding on every step: cross-entropy over a single class
        F.cross_entropy(out[:, :1], y).backward()
        opt.step()


def test_a_finding_every_step_for_2000_steps_keeps_memory_flat():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    with torch_audit.audit(select=["ALL"], preview=True) as session:
        _tiny_loop(100, model, opt, x, y)  # warm-up: histories fill, caches settle
        gc.collect()
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            _tiny_loop(1900, model, opt, x, y)
            gc.collect()
            end, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    growth = end - start
    # de-duplicated: one finding with a count, not 2000 findings
    [f] = [f for f in session.findings if f.code == "TA708"]
    assert (f.step, f.count) == (0, 2000)
    assert len(session.findings) < 10, session.report()
    # flat: well under 100 bytes per step (one stored finding per step would be ~1 KB)
    assert growth < 200_000, f"memory grew by {growth} bytes over 1900 steps"


def test_run_history_for_the_html_report_is_bounded(tmp_path):
    """``torch-audit run --html`` records a history; over a long run it must not grow per step
    without bound (the charts are decimated)."""
    from torch_audit.runtime.audited_run import audit_script

    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent("""
        import sys, gc, tracemalloc
        import torch
        from torch import nn
        import torch.nn.functional as F
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
        def loop(n):
            for _ in range(n):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        loop(100)
        gc.collect(); tracemalloc.start()
        a, _ = tracemalloc.get_traced_memory()
        loop(int(sys.argv[1]))
        gc.collect()
        b, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print("GROWTH", b - a)
    """))
    import contextlib
    import io

    growth = {}
    for n in (300, 1300):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            outcome = audit_script(str(script), [str(n)], history=True)
        assert outcome.exception is None, outcome.exception
        growth[n] = int(buf.getvalue().split("GROWTH")[1].split()[0])
    per_step = (growth[1300] - growth[300]) / 1000
    # bounded (decimated) history: next to nothing per step; one entry per step is ~300 bytes
    assert per_step < 100, f"{per_step:.0f} bytes per step ({growth})"


# -- distributed ----------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, store: str, out_dir: str, scenario: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=30))
    result: dict = {"rank": rank, "raised": None}
    t0 = time.monotonic()
    session = None
    try:
        torch.manual_seed(0)
        model = DDP(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        try:
            with torch_audit.audit() as session:
                for step in range(4):
                    x = torch.randn(8, 4)
                    if rank == 0 and step == 1:
                        x[0, 0] = float("nan")  # a finding on the surviving rank
                    if scenario == "forward" and rank == 1 and step == 2:
                        raise RuntimeError("rank 1 crashed in its forward")
                    opt.zero_grad()
                    model(x).sum().backward()
                    opt.step()
                if scenario == "after-loop" and rank == 1:
                    raise RuntimeError("rank 1 crashed after its last step")
        except Exception as exc:
            result["raised"] = f"{type(exc).__name__}: {exc}"[:300]
        if scenario == "after-loop" and rank == 1:
            time.sleep(8)  # the crashed rank lingers (cleanup, a checkpoint save) before exiting
        result["findings"] = [(f.code, f.rank, f.step) for f in session.findings] if session else None
        result["notes"] = session.notes if session else None
        result["seconds"] = time.monotonic() - t0
        result["hooks_clean"] = active_session() is None
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _spawn_ddp(tmp_path: Path, scenario: str, timeout: float = 120.0) -> list[dict]:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        # spawn, not fork: a pytest-xdist worker that already ran other tests has live threads
        # (OpenMP, gloo), and a forked child can deadlock on a lock one of them held (a 120 s
        # hang in one full-suite run that never reproduced in a fresh process)
        _ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path), scenario), nprocs=2,
        join=False, start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if ctx.join(timeout=1):
                    break
            except mp.ProcessRaisedException:
                break
            except mp.ProcessExitedException:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {timeout} s (a hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


ddp_only = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


@ddp_only
def test_ddp_rank_crashing_mid_training_does_not_hang_the_survivor(tmp_path):
    r0, r1 = _spawn_ddp(tmp_path, "forward")
    assert r1["raised"] == "RuntimeError: rank 1 crashed in its forward"
    assert r1["hooks_clean"] and r0["hooks_clean"]
    # rank 0 is stopped by DDP's own all-reduce failing, not by torch-audit; it still has its
    # findings (its own NaN loss at step 1), and nothing waited for the process-group timeout
    assert r0["raised"] is not None
    assert ["TA701", 0, 1] in r0["findings"], r0
    assert r0["seconds"] < 25, r0


@ddp_only
def test_ddp_rank_crashing_after_the_loop_does_not_hang_the_survivors_report(tmp_path):
    """Rank 0 finishes cleanly and leaves the session; rank 1 raised inside it. Rank 0 must not
    block in the session's end-of-run gather until the process-group timeout, nor crash."""
    r0, r1 = _spawn_ddp(tmp_path, "after-loop")
    assert r1["raised"] == "RuntimeError: rank 1 crashed after its last step"
    assert r0["raised"] is None, r0  # torch-audit must not turn a good run into a crash
    assert ["TA701", 0, 1] in r0["findings"], r0
    assert r0["seconds"] < 20, r0
    # and its report says why the other rank's findings are missing
    assert r0["notes"] == ["findings of rank 0 only; the other ranks' findings were not gathered: "
                           "rank 1 left its session with an exception"], r0


# -- scripts through `torch-audit run` -----------------------------------------------------------

SCRIPT_HEAD = """
import hashlib, sys
import torch
from torch import nn
import torch.nn.functional as F


def digest(model, opt):
    h = hashlib.sha256()
    for t in list(model.state_dict().values()) + [torch.get_rng_state()]:
        h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    for s in opt.state_dict()["state"].values():
        for v in s.values():
            h.update(torch.as_tensor(v).reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    print("DIGEST", h.hexdigest())
"""

SCRIPTS = {
    "dataloader_workers": """
from torch.utils.data import DataLoader, Dataset

class Data(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(8, generator=g), i % 3

if __name__ == "__main__":
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(Data(), batch_size=16, shuffle=True, num_workers=2,
                        multiprocessing_context="fork", persistent_workers=False)
    for epoch in range(2):
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    digest(model, opt)
""",
    "autocast_bf16": """
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for _ in range(6):
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out, y)
    assert out.dtype == torch.bfloat16
    loss.backward()
    opt.step()
digest(model, opt)
""",
    "activation_checkpoint": """
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 32))
        self.b = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 2)
    def forward(self, x):
        x = checkpoint(self.a, x, use_reentrant=False)   # dropout: RNG state replayed
        x = checkpoint_sequential(self.b, 2, x, use_reentrant=True)
        return self.head(x)

torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for _ in range(5):
    x = torch.randn(16, 8, requires_grad=True)
    opt.zero_grad()
    F.cross_entropy(model(x), torch.randint(0, 2, (16,))).backward()
    opt.step()
digest(model, opt)
""",
    "compile_eager_backend": """
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
cmodel = torch.compile(model, backend="eager")
for _ in range(4):
    opt.zero_grad()
    F.cross_entropy(cmodel(torch.randn(8, 8)), torch.randint(0, 2, (8,))).backward()
    opt.step()
digest(model, opt)
""",
    "compile_inductor": """
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
cmodel = torch.compile(model)
for _ in range(3):
    opt.zero_grad()
    F.cross_entropy(cmodel(torch.randn(8, 8)), torch.randint(0, 2, (8,))).backward()
    opt.step()
digest(model, opt)
""",
}


def _python_and_run(tmp_path: Path, name: str):
    script = tmp_path / f"{name}.py"
    script.write_text(SCRIPT_HEAD + textwrap.dedent(SCRIPTS[name]))
    env = {**ENV, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"}
    cmds = [[sys.executable, str(script)],
            [sys.executable, "-m", "torch_audit", "run", "--select", "ALL", "--preview", str(script)]]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
        out.append((p.returncode, o, e))
    return out


def _digest(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("DIGEST ")]
    assert len(lines) == 1, stdout
    return lines[0]


@pytest.mark.parametrize(
    "name",
    [
        "dataloader_workers",
        "autocast_bf16",
        "activation_checkpoint",
        "compile_eager_backend",
        pytest.param("compile_inductor", marks=pytest.mark.slow),
    ],
)
def test_torch_audit_run_changes_no_result(tmp_path, name):
    (pc, pout, perr), (rc, rout, rerr) = _python_and_run(tmp_path, name)
    assert pc == 0, perr
    assert rc == 0, rerr
    assert "Traceback" not in rerr, rerr
    assert _digest(rout) == _digest(pout)
    assert "TA799" not in rerr and "internal" not in rerr.lower(), rerr
