"""The cost budget: short training passes audited in bursts (``pass_sampling``), the policy on a
simulated clock first, then sessions on real loops."""

from __future__ import annotations

import contextlib
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torch_audit
from torch_audit.runtime.pass_sampling import AUDITED, GAP, PROBED, PassSampler, parse_budget


# -- the policy, on a simulated clock ---------------------------------------------------------
class SimulatedRun:
    """Passes of ``plain`` seconds, ``audit`` seconds more when audited (and ``cold`` more for
    an audited pass after unaudited ones: the audit's code runs cold); a gap lasts its
    ``gap_seconds`` of passes (the first pass after it is the next one the sampler sees)."""

    def __init__(self, sampler: PassSampler, plain: float, audit: float, cold: float = 0.0) -> None:
        self.sampler, self.plain, self.audit, self.cold = sampler, plain, audit, cold
        self.now = 0.0
        self.passes = 0
        self.decisions: list[str] = []

    def run(self, passes: int) -> None:
        while self.passes < passes:
            decision = self.sampler.starts(self.now)
            self.decisions.append(decision)
            if decision == GAP:
                skipped = max(1, int(self.sampler.gap_seconds / self.plain))
                self.passes += skipped
                self.now += skipped * self.plain
            else:
                cold = self.cold if self.decisions[-2:-1] not in ([], [AUDITED]) else 0.0
                self.passes += 1
                self.now += self.plain + (self.audit + cold if decision == AUDITED else 0.0)


def test_the_warm_up_is_audited_whole_then_a_probe_measures_unaudited_passes():
    sampler = PassSampler(0.02)
    run = SimulatedRun(sampler, plain=100e-6, audit=100e-6)
    run.run(PassSampler.WARMUP + PassSampler.PROBE)
    assert run.decisions[:PassSampler.WARMUP] == [AUDITED] * PassSampler.WARMUP
    assert run.decisions[PassSampler.WARMUP:] == [PROBED] * PassSampler.PROBE


def test_a_cheap_audit_audits_every_pass_for_good():
    sampler = PassSampler(0.02)
    run = SimulatedRun(sampler, plain=10e-3, audit=0.1e-3)  # 1% of a 10 ms pass
    run.run(2000)
    probe_end = PassSampler.WARMUP + PassSampler.PROBE
    assert set(run.decisions[probe_end:]) == {AUDITED}
    assert sampler.stopped == "the audit's cost is within the budget"


@pytest.mark.parametrize("plain, audit, cold, budget", [
    (100e-6, 100e-6, 0.0, 0.02),     # regression's loop: the audit doubles the pass
    (500e-6, 500e-6, 0.0, 0.02),     # a small MLP with Adam
    (20e-3, 3e-3, 0.0, 0.02),        # a 20 ms pass with a 15% audit
    (100e-6, 30e-6, 0.0, 0.05),
    (100e-6, 150e-6, 350e-6, 0.02),  # measured: a burst's first pass costs 3.4x the others
    (570e-6, 500e-6, 850e-6, 0.02),
])
def test_in_a_long_run_the_audit_adds_about_the_budget(plain, audit, cold, budget):
    sampler = PassSampler(budget)
    run = SimulatedRun(sampler, plain, audit, cold)
    run.run(20 * PassSampler.WARMUP)
    start_time, start_passes = run.now, run.passes
    run.run(start_passes + 200_000)
    added = (run.now - start_time) / ((run.passes - start_passes) * plain) - 1
    assert budget * 0.7 < added < budget * 1.2
    assert sampler.stopped is None
    # bursts of BURST consecutive audited passes between the gaps
    later = run.decisions[-400:]
    runs = "".join("a" if d == AUDITED else "p" if d == PROBED else "g" for d in later)
    assert all(len(chunk) == PassSampler.BURST for chunk in runs.replace("p", "g").split("g") if chunk)


def test_gaps_are_capped_so_that_a_problem_is_seen_within_a_second():
    sampler = PassSampler(0.001)
    run = SimulatedRun(sampler, plain=1e-3, audit=10e-3)  # 10x: a 40 s gap uncapped
    run.run(30_000)
    assert sampler.gaps
    assert sampler.gap_seconds <= PassSampler.MAX_GAP_S * 1.25


def test_gaps_are_jittered_with_a_fixed_seed():
    def gaps(seed: int) -> list[float]:
        sampler = PassSampler(0.02, seed=seed)
        out = []
        run = SimulatedRun(sampler, 100e-6, 100e-6)
        for passes in range(2000, 20_000, 200):
            run.run(passes)
            out.append(round(sampler.gap_seconds, 9))
        return out

    assert gaps(0) == gaps(0)
    assert len(set(gaps(0))) > 10  # not one length: bursts do not fall in step with the loop


def test_a_pass_seen_inside_a_gap_still_belongs_to_it():
    sampler = PassSampler(0.02)
    now, decision = 0.0, AUDITED
    while decision != GAP:
        now += 200e-6 if decision == AUDITED else 100e-6
        decision = sampler.starts(now)
    gaps, until = sampler.gaps, now + sampler.gap_seconds
    now += 1e-3
    assert sampler.starts(now) == GAP  # e.g. the first pass after session.paused()
    assert sampler.gaps == gaps
    assert sampler.gap_seconds == pytest.approx(until - now)
    assert sampler.starts(until + 1e-6) == AUDITED  # the gap is over: a burst


def test_overruling_audits_the_pass_and_a_burst_and_keeps_the_counts():
    sampler = PassSampler(0.02)
    run = SimulatedRun(sampler, 100e-6, 100e-6)
    run.run(PassSampler.WARMUP)
    assert sampler.starts(run.now) == PROBED
    sampler.overrule(PROBED, run.now)
    assert (sampler.audited_passes, sampler.probed_passes) == (PassSampler.WARMUP + 1, 0)
    now = run.now
    following = []
    for _ in range(PassSampler.BURST - 1):
        now += 200e-6
        following.append(sampler.starts(now))
    assert following == [AUDITED] * (PassSampler.BURST - 1)


def test_stop_and_restart():
    sampler = PassSampler(0.02)
    run = SimulatedRun(sampler, 100e-6, 100e-6)
    run.run(5000)
    assert sampler.sampling
    sampler.restart()  # a new optimizer: a new warm-up
    run.decisions.clear()
    run.run(run.passes + PassSampler.WARMUP)
    assert set(run.decisions) == {AUDITED}
    sampler.stop("an error was found")
    run.decisions.clear()
    run.run(run.passes + 5000)
    assert set(run.decisions) == {AUDITED}
    sampler.restart()  # stopped for good
    run.run(run.passes + 5000)
    assert set(run.decisions) == {AUDITED}


def test_the_unaudited_passes_are_estimated_from_the_gaps_time():
    sampler = PassSampler(0.02)
    run = SimulatedRun(sampler, 100e-6, 100e-6)
    run.run(30_000)
    total = sampler.audited_passes + sampler.unaudited_estimate(run.now)
    assert total == pytest.approx(run.passes, rel=0.05)


@pytest.mark.parametrize("given, value", [
    (0.02, 0.02), ("0.05", 0.05), ("2%", 0.02), (" OFF ", None), ("none", None),
])
def test_parse_budget(given, value):
    assert parse_budget(given) == value


@pytest.mark.parametrize("given", [0, 1, 2, -0.1, True, "x", "200%", [0.1]])
def test_parse_budget_rejects(given):
    with pytest.raises(ValueError, match="expected a fraction"):
        parse_budget(given)


# -- sessions on real loops -------------------------------------------------------------------
def _doubling(sampler: PassSampler) -> float:
    sampler.cost_ratio = 1.0
    return 1.0


@pytest.fixture
def short_warm_up(monkeypatch):
    """A warm-up of 24 passes instead of 200, so that the tests' loops stay short, and an audit
    that doubles a pass whatever this machine's load says (the policy's measurements are
    tested on a simulated clock above; these tests are about the hooks)."""
    monkeypatch.setattr(PassSampler, "WARMUP", 24)
    monkeypatch.setattr(PassSampler, "_ratio", _doubling)


def regression_pass(model: nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    x = torch.randn(16, 4) if x is None else x
    model.zero_grad()
    loss = F.smooth_l1_loss(model(x), torch.zeros(16, 1))
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad
    return loss


def torch_audit_module_hooks() -> list:
    from torch.nn.modules import module as nn_module

    return [h for h in (*nn_module._global_forward_pre_hooks.values(),
                        *nn_module._global_forward_hooks.values())
            if "torch_audit" in getattr(h, "__module__", "") or "TorchHooks" in repr(h)]


def test_a_long_run_of_short_passes_is_sampled_and_the_report_says_so(short_warm_up):
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        for _ in range(1500):
            regression_pass(model)
        sampler = session.sampler
    assert sampler.sampling and sampler.gaps
    assert session.findings == []
    note = next(n for n in session.notes if "training passes were audited" in n)
    audited, about = sampler.audited_passes, sampler.audited_passes + sampler.unaudited_estimate(0)
    assert f"{audited} of about" in note and "budget=None" in note and "--budget off" in note
    assert audited < 1500 / 2


def test_a_gap_leaves_no_module_hook_installed(short_warm_up):
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        hooks = session._hooks
        for _ in range(1500):
            regression_pass(model)
            if hooks.light and hooks.light_handle is None:
                break
        else:
            pytest.fail("no gap began")
        assert torch_audit_module_hooks() == []
        window = hooks.window
        if sys.version_info >= (3, 12) and window._monitor is not None:  # no backward() events
            mon, monitor = sys.monitoring, window._monitor
            assert all(mon.get_local_events(monitor.tool, code) == 0
                       for code, _, _ in monitor.codes.values())
    assert torch_audit_module_hooks() == []


def test_budget_none_audits_every_pass(short_warm_up):
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False, budget=None) as session:
        for _ in range(400):
            regression_pass(model)
    assert session.sampler is None
    assert not any("training passes were audited" in n for n in session.notes)


def test_a_nan_that_persists_is_found_after_a_gap(short_warm_up):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False, select=["nonfinite-loss"]) as session:
        for i in range(3000):
            if i == 800:
                with torch.no_grad():
                    model.weight[0, 0] = float("nan")
            regression_pass(model)
    assert [f.name for f in session.findings] == ["nonfinite-loss"]
    assert session.findings[0].step is not None
    assert session.sampler.stopped == "an error was found"


def test_a_run_that_ends_in_a_gap_is_swept_for_non_finite_parameters(short_warm_up, monkeypatch):
    monkeypatch.setattr(PassSampler, "MAX_GAP_S", 60.0)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch_audit.audit(config=False, budget=1e-4) as session:
        hooks = session._hooks
        for _ in range(2000):
            opt.zero_grad()
            F.mse_loss(model(torch.randn(16, 4)), torch.zeros(16, 1)).backward()
            opt.step()
            if hooks.light and hooks.light_handle is None:
                break  # a 60 s gap began
        else:
            pytest.fail("no gap began")
        for g in opt.param_groups:
            g["lr"] = float("inf")  # the parameters go non-finite inside the gap
        for _ in range(3):
            opt.zero_grad()
            F.mse_loss(model(torch.randn(16, 4)), torch.zeros(16, 1)).backward()
            opt.step()
    names = [f.name for f in session.findings]
    assert names == ["nonfinite-parameter"]
    assert session.findings[0].step == session.step - 1  # the last step, as the sweep saw it


def test_steps_of_unaudited_passes_are_counted(short_warm_up):
    from torch_audit.runtime.run_monitor import MaxStepsReached, RunMonitor

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = 0
    with pytest.raises(MaxStepsReached):
        with torch_audit.audit(config=False) as session:
            monitor = session.subscribe(RunMonitor(session, max_steps=1200))
            for _ in range(2000):
                opt.zero_grad()
                F.mse_loss(model(torch.randn(16, 4)), torch.zeros(16, 1)).backward()
                opt.step()
                steps += 1
    assert steps == 1199  # the 1200th step raised in its post-hook
    assert monitor.steps == 1200 and session.optimizer_steps == 1200
    assert session.sampler.gaps and session.unaudited_steps > 600  # most of them unaudited
    note = next(n for n in session.notes if "training passes were audited" in n)
    assert (f"{session.sampler.audited_passes} training passes were audited, and "
            f"{session.unaudited_steps} of the 1200 optimizer steps ran in unaudited passes") in note


def test_an_inference_forward_in_train_mode_is_audited_between_bursts(short_warm_up, monkeypatch):
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 1))
    with torch_audit.audit(config=False, select=["inference-in-train-mode"]) as session:
        for _ in range(PassSampler.WARMUP + 2):
            regression_pass(model)
        assert session._hooks.light and session._hooks.light_handle is not None  # a probe
        with torch.no_grad():
            model(torch.randn(16, 4))  # evaluated without model.eval()
    assert [f.name for f in session.findings] == ["inference-in-train-mode"]


def test_a_parameter_without_gradient_keeps_every_pass_audited(short_warm_up):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 1), nn.Linear(4, 1)

        def forward(self, x):
            return self.used(x)

    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch_audit.audit(config=False, select=["unused-parameter"]) as session:
        for _ in range(1000):
            opt.zero_grad()
            F.mse_loss(model(torch.randn(16, 4)), torch.zeros(16, 1)).backward()
            opt.step()
    assert not session.sampler.sampling  # unused-parameter needed every pass to be sure
    assert [f.name for f in session.findings] == ["unused-parameter"]


def test_two_trained_models_are_audited_whole(short_warm_up):
    g, d = nn.Linear(4, 4), nn.Linear(4, 1)
    opt = torch.optim.SGD([*g.parameters(), *d.parameters()], lr=0.01)
    with torch_audit.audit(config=False) as session:
        for _ in range(600):
            opt.zero_grad()
            d(g(torch.randn(16, 4))).mean().backward()
            opt.step()
    assert session.sampler.stopped == "two models are trained"
    assert not session.sampler.sampling


def test_a_subscriber_that_needs_every_pass_keeps_them(short_warm_up):
    class Counter:
        events = frozenset({"backward"})

        def __init__(self) -> None:
            self.seen = 0

        def on_backward(self, event) -> None:
            self.seen += 1

    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        counter = session.subscribe(Counter())
        for _ in range(600):
            regression_pass(model)
    assert counter.seen == 600
    assert not session.sampler.sampling


def test_a_paused_block_inside_a_gap_resumes_the_gap(short_warm_up, monkeypatch):
    monkeypatch.setattr(PassSampler, "MAX_GAP_S", 60.0)
    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False, budget=1e-4) as session:
        hooks = session._hooks
        for _ in range(2000):
            regression_pass(model)
            if hooks.light and hooks.light_handle is None:
                break
        gaps, audited = session.sampler.gaps, session.sampler.audited_passes
        with session.paused():
            regression_pass(model)
        for _ in range(5):
            regression_pass(model)
        assert (session.sampler.gaps, session.sampler.audited_passes) == (gaps, audited)
        assert hooks.light and torch_audit_module_hooks() == []


def test_a_compiled_model_is_audited_whole_and_not_recompiled(short_warm_up):
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # global: other tests compile too
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch_audit.audit(config=False) as session:
        for _ in range(300):
            opt.zero_grad()
            F.mse_loss(compiled(torch.randn(16, 4)), torch.zeros(16, 1)).backward()
            opt.step()
    assert session.sampler.stopped == "a compiled model"
    assert not session.sampler.sampling
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames <= 2  # compiled once (the session's hooks never changed)


def test_torch_distributed_started_inside_the_session_stops_sampling(short_warm_up, monkeypatch):
    from torch_audit.runtime import hooks as hooks_module

    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False) as session:
        for _ in range(PassSampler.WARMUP // 2):
            regression_pass(model)
        monkeypatch.setattr(hooks_module.dist, "active", lambda: True)  # init_process_group()
        for _ in range(600):
            regression_pass(model)
    assert session.sampler.stopped == "torch.distributed: every rank audits every pass"
    assert not session.sampler.sampling


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_the_alarm_works_in_a_forked_child():
    import os

    from torch_audit.runtime.alarm import Alarm

    alarm = Alarm()
    alarm.set(60.0, lambda: None)  # the parent's thread is running, waiting
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no alarm thread was copied; a new one serves it
        try:
            done = __import__("threading").Event()
            alarm.set(0.01, done.set)
            os.write(write, b"1" if done.wait(5) else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    alarm.close()


def test_the_html_report_carries_the_sessions_notes():
    from torch_audit.runtime.audited_run import RunOutcome
    from torch_audit.runtime.run_report import html_meta

    outcome = RunOutcome(findings=[], notes=["12 training passes were audited, and 3 of the 15 "
                                             "optimizer steps ran in unaudited passes between them"])
    outcome.steps = 15
    meta = html_meta("train.py", [], outcome, "2.13.0")
    assert meta["note"].startswith("12 training passes were audited")


# -- correct recipes stay silent when most of their passes are unaudited ------------------------
def _ema_teacher(steps: int) -> None:
    student, teacher = nn.Linear(8, 4), nn.Linear(8, 4)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    for _ in range(steps):
        x = torch.randn(16, 8)
        with torch.no_grad():
            target = teacher(x)
        opt.zero_grad()
        F.mse_loss(student(x), target).backward()
        opt.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.mul_(0.99).add_(s, alpha=0.01)


def _two_stage_finetune(steps: int) -> None:
    backbone, head = nn.Linear(8, 8), nn.Linear(8, 2)
    model = nn.Sequential(backbone, nn.ReLU(), head)
    for p in backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    for step in range(steps):
        if step == steps // 2:  # stage two: unfreeze, and a new optimizer over everything
            for p in backbone.parameters():
                p.requires_grad_(True)
            opt = torch.optim.SGD(model.parameters(), lr=0.001)
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 2, (16,))).backward()
        opt.step()


def _accumulation(steps: int) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.mse_loss(model(torch.randn(16, 8)).float(), torch.zeros(16, 1)) / 4
        scaler.scale(loss).backward()
        if step % 4 == 3:
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()


def _manual_sgd_with_validation(steps: int) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.Linear(8, 1))
    for step in range(steps):
        model.train()
        model.zero_grad()
        F.mse_loss(model(torch.randn(16, 8)), torch.zeros(16, 1)).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
        if step % 50 == 49:
            model.eval()
            with torch.no_grad():
                model(torch.randn(16, 8))


@pytest.mark.parametrize("recipe", [_ema_teacher, _two_stage_finetune, _accumulation,
                                    _manual_sgd_with_validation], ids=lambda f: f.__name__[1:])
def test_a_correct_recipe_stays_silent_audited_in_bursts(recipe, monkeypatch):
    for name, value in (("WARMUP", 8), ("PROBE", 8), ("BURST", 4), ("MAX_GAP_S", 0.002),
                        ("REPROBE", 4)):
        monkeypatch.setattr(PassSampler, name, value)
    monkeypatch.setattr(PassSampler, "_ratio", _doubling)  # whatever this machine's load says
    torch.manual_seed(0)
    with torch_audit.audit(config=False, select=["ALL"], preview=True, budget=1e-4) as session:
        recipe(600)
    assert session.findings == [], session.report()
    sampler = session.sampler  # switched between audited and unaudited passes often
    assert sampler.gaps >= 5, (sampler.stopped, sampler.audited_passes, sampler.probed_passes)


def test_loss_modules_built_at_every_step_pace_nothing_and_are_not_kept(short_warm_up):
    import gc

    model = nn.Linear(4, 1)
    with torch_audit.audit(config=False, select=["cross-entropy-single-class"]) as session:
        for _ in range(300):
            model.zero_grad()
            nn.MSELoss()(model(torch.randn(16, 4)), torch.zeros(16, 1)).backward()  # a new root
        gc.collect()
        assert len(session._hooks._has_params) <= 2
        assert session.sampler.sampling  # the model paces the passes, not the losses


def test_a_sampled_run_trains_bitwise_as_without_the_audit(short_warm_up):
    def train(audited: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        with torch_audit.audit(config=False) if audited else contextlib.nullcontext() as session:
            for _ in range(400):
                opt.zero_grad()
                F.mse_loss(model(torch.randn(16, 8)), torch.zeros(16, 1)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        if audited:
            assert session.sampler.gaps  # switched between audited and unaudited passes
        return [p.detach().clone() for p in model.parameters()], torch.get_rng_state()

    plain_params, plain_rng = train(False)
    audited_params, audited_rng = train(True)
    assert all(torch.equal(a, b) for a, b in zip(plain_params, audited_params))
    assert torch.equal(plain_rng, audited_rng)
