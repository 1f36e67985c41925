"""Issue 18, items 1-3 and 5: the runtime never breaks or misleads a correct training run.

Threads training their own models, tensors the session cannot read (meta, fake, DTensor),
bounded memory per check, and a forked child that exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit


def _train(model, steps, seed, barrier=None):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if barrier is not None:
            try:
                barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
        opt.step()


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))


# -- item 1: threads ----------------------------------------------------------------------------


@pytest.mark.parametrize("repeat", range(4))
def test_two_threads_training_two_models_give_no_findings_and_a_note(repeat):
    """A backward hook used to read p.grad of every optimizer's parameters, also those another
    thread was zeroing: segfaults, heap corruption and false param-not-in-optimizer errors."""
    errors = []
    models = [_mlp(1), _mlp(2), _mlp(3)]
    barrier = threading.Barrier(3)

    def work(i):
        try:
            _train(models[i], 30, seed=i, barrier=barrier)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        threads = [threading.Thread(target=work, args=(i,), name=f"trainer-{i}") for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors
    assert session.findings == [], session.report()
    assert any("trainer-" in note and "not audited" in note for note in session.notes), session.notes


def test_the_opening_thread_is_audited_while_another_trains():
    stop = threading.Event()
    other = _mlp(5)

    def background():
        while not stop.is_set():
            _train(other, 1, seed=9)

    model = _mlp(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        t = threading.Thread(target=background, name="background-trainer")
        t.start()
        try:
            for step in range(6):
                opt.zero_grad()
                loss = F.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 3, (16,)))
                if step == 4:
                    loss = loss * float("nan")
                loss.backward()
                opt.step()
        finally:
            stop.set()
            t.join(timeout=60)
    assert "TA701" in session.codes, session.report()  # the main thread's NaN loss
    assert all(f.module is None or not f.module.startswith("Sequential#") for f in session.findings)


# -- item 2: tensors the session cannot read -----------------------------------------------------


def test_meta_shape_probe_then_step_does_not_raise():
    model = _mlp(0)
    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        with torch.device("meta"):
            probe = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
            out = probe(torch.empty(4, 8))
        assert out.shape == (4, 3)
        _train(model, 3, seed=0)  # NotImplementedError: Cannot copy out of meta tensor
    assert session.findings == [], session.report()


def test_a_model_on_meta_trained_to_the_step_does_not_raise():
    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        with torch.device("meta"):
            model = _mlp(0).to("meta")
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            loss = model(torch.empty(4, 8)).sum()
            loss.backward()
            opt.step()
        _train(_mlp(1), 2, seed=1)
    assert [f.code for f in session.findings] == [], session.report()


def test_fake_tensor_forward_inside_a_session_does_not_raise():
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = _mlp(0)
    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake_x = mode.from_tensor(torch.randn(4, 8))
            model(fake_x)
        _train(model, 3, seed=0)
    assert session.findings == [], session.report()


def _gloo_world_of_one(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)


def test_dtensor_parameters_world_size_one(tmp_path):
    """Tensor parallelism (DTensor parameters) raised `aten.cat.default got mixed
    torch.Tensor and DTensor` at the first step."""
    import torch.distributed as dist

    _gloo_world_of_one(tmp_path)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        mesh = init_device_mesh("cpu", (1,))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with torch_audit.audit(preview=True, select=["ALL"]) as session:
            for step in range(4):
                opt.zero_grad()
                out = model(torch.randn(16, 8))
                loss = F.cross_entropy(out, torch.randint(0, 3, (16,)))
                if step == 3:
                    loss = loss * float("nan")
                loss.backward()
                opt.step()
        codes = set(session.codes)
        assert "TA799" not in codes, session.report()
        assert "TA701" in codes, session.report()  # still reads the (local) values
    finally:
        dist.destroy_process_group()


def test_unexpected_error_in_the_session_machinery_is_one_finding(monkeypatch):
    """Anything unexpected in the session's own device work (here the gradient norms it computes
    for the gradient checks) becomes one runtime-internal-error finding per check concerned,
    never an exception in the user's training."""
    from torch_audit.runtime import reduce

    def broken(*args, **kwargs):
        raise RuntimeError("device exploded")

    model = _mlp(0)
    with torch_audit.audit(select=["exploding-gradient", "nonfinite-loss"]) as session:
        monkeypatch.setattr(reduce, "norms", broken)
        _train(model, 3, seed=0)
    monkeypatch.undo()
    internal = [f for f in session.findings if f.code == "TA799"]
    assert len(internal) == 1 and "device exploded" in internal[0].message, session.report()
    assert "exploding-gradient" in internal[0].message
    assert {f.code for f in session.findings} == {"TA799"}, session.report()


# -- item 3: bounded memory -----------------------------------------------------------------------


def _state_size(obj, seen=None, depth=0) -> int:
    """Number of container slots reachable from a check's attributes (tensors count as one)."""
    if seen is None:
        seen = set()
    if id(obj) in seen or depth > 6 or isinstance(obj, (torch.Tensor, nn.Module, str, bytes)):
        return 1
    seen.add(id(obj))
    if isinstance(obj, dict):
        return len(obj) + sum(_state_size(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        return len(obj) + sum(_state_size(v, seen, depth + 1) for v in obj)
    return 1


def test_every_check_keeps_bounded_state_over_many_steps():
    model = _mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sizes = {}
    # budget=None: every step audited (more events to grow on), and the checks' windows in
    # the same phase at steps 99 and 399 whatever this machine's timing (sampling moves them)
    with torch_audit.audit(preview=True, select=["ALL"], budget=None) as session:
        for step in range(400):
            opt.zero_grad()
            loss = F.cross_entropy(model(torch.randn(8, 8)), torch.randint(0, 3, (8,)))
            loss.backward()
            opt.step()
            if step in (99, 399):
                for check in session.checks:
                    state = {k: v for k, v in vars(check).items() if k not in ("session", "opts")}
                    sizes.setdefault(check.name, []).append(_state_size(state))
    grown = {name: s for name, s in sizes.items() if s[1] > s[0] + 8}
    assert not grown, grown


# -- item 5: fork ---------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_that_exits_reports_nothing(tmp_path):
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import torch
        from torch import nn
        import torch_audit

        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with torch_audit.audit() as session:
            model(torch.randn(2, 4)).sum().backward()
            opt.step()
            pid = os.fork()
            if pid == 0:
                print("child", session.in_forked_child, flush=True)
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            (model(torch.randn(2, 4)).sum() * float("nan")).backward()
        session.print_report()
        print("child status", os.waitstatus_to_exitcode(status))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "child True" in out
    assert out.count("Found 1 runtime finding") == 1, out
    assert "child status 0" in out


def test_backward_without_any_optimizer_keeps_bounded_state():
    """A hand-written update loop never steps an optimizer: deferred reads and per-step loss
    lists used to grow by one entry per backward() until the session ended."""
    from torch_audit.runtime.deferred_reads import MAX_PENDING

    model = nn.Linear(8, 1)
    with torch_audit.audit(preview=True, select=["ALL"]) as session:
        for _ in range(MAX_PENDING + 300):
            model.zero_grad()
            model(torch.randn(4, 8)).pow(2).mean().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
        assert session.pending_reads < MAX_PENDING
        losses = next(c for c in session.checks if c.name == "loss-diverging")._losses
        assert len(losses) <= 256


# -- issue 19 item 5: say what did not run ---------------------------------------------------------


def test_a_session_without_optimizer_steps_says_the_step_checks_did_not_run():
    model = nn.Linear(8, 1)
    with torch_audit.audit() as session:
        for _ in range(3):
            model.zero_grad()
            model(torch.randn(4, 8)).pow(2).mean().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
    assert session.optimizer_steps == 0
    assert session.findings == []
    assert len(session.not_checked) == 1 and "did not run" in session.not_checked[0]
    assert "did not run" in session.report()

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch_audit.audit() as stepped:
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
    assert stepped.optimizer_steps == 1 and stepped.not_checked == []
    assert "did not run" not in stepped.report()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_torch_audit_run_reports_once_when_a_forked_child_exits(tmp_path):
    """A forked child's sys.exit(0) printed a second report, rewrote the output file and made
    the child exit 1 (issue 18 item 5)."""
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        import torch
        from torch import nn

        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        (model(torch.randn(2, 4)).sum() * float("nan")).backward()  # a finding before the fork
        opt.step()
        pid = os.fork()
        if pid == 0:
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)
    """))
    out = tmp_path / "out.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch_audit", "run", "-o", str(out), str(script)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    both = proc.stdout + proc.stderr
    assert "child status 0" in proc.stdout, both
    assert proc.returncode == 1, both  # the parent's findings
    report = out.read_text()
    assert "TA701" in report
    assert (both + report).count("torch-audit: audited") == 1, both + report  # the parent's
