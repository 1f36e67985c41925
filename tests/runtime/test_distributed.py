"""DDP (and FSDP2) with gloo on two CPU processes: symmetric collectives (no hang when one rank sees a NaN),
global norm equal to the single-process value, findings tagged by rank, rank 0 prints."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.multiprocessing as mp

from . import _ddp_worker

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


def _spawn(tmp_path, timeout=120.0):
    ctx = mp.start_processes(
        # spawn, not fork: a pytest-xdist worker that already ran other tests has live threads
        # (OpenMP, gloo), and a forked child can deadlock on a lock one of them held (a 120 s
        # hang in one full-suite run that never reproduced in a fresh process)
        _ddp_worker.run, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
        join=False, start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("distributed workers did not finish in time (deadlock?)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_ddp_two_processes(tmp_path):
    r0, r1 = _spawn(tmp_path)
    # the global gradient norm equals the single-process value (DDP averages gradients)
    for r in (r0, r1):
        assert r["norm0"] == pytest.approx(r["ref_norm"], rel=1e-5)
    # findings of all ranks, tagged by rank, on every rank after the session
    assert r0["findings"] == r1["findings"]
    found = {(code, rank) for code, rank, _ in r0["findings"]}
    assert ("TA701", 1) in found and ("TA701", 0) not in found  # the NaN loss was rank 1's
    assert ("TA702", 0) in found and ("TA702", 1) in found  # DDP spread it to both ranks
    assert all(step == 2 for code, _, step in r0["findings"] if code in ("TA701", "TA702"))
    # rank 0 alone prints
    assert "TA701" in r0["printed"] and "rank: 1" in r0["printed"]  # the linter's runtime facts: (module: …, step: …, rank: 1)
    assert r1["printed"] == ""
    # fail_fast: both ranks stop together, before the step of rank 1's error, with its finding
    assert r0["raised_at"] == r1["raised_at"] == [1, "TA708", 1]
    # FSDP2 on CPU: the global norm of the sharded gradients equals the single-process norm
    import torch.distributed.fsdp as fsdp

    assert (r0["fsdp"] is not None) == hasattr(fsdp, "fully_shard")
    for r in (r0, r1):
        if r["fsdp"] is not None:
            assert r["fsdp"]["norm"] == pytest.approx(r["fsdp"]["ref"], rel=1e-5)
            assert r["fsdp"]["findings"] == []


def _agree_in_threads(outcomes: dict[int, tuple[bool, float]], timeout: float) -> dict[int, tuple]:
    """Ranks as threads sharing one store: rank → (clean, delay before leaving the session);
    returns rank → (what dist.agree answered, seconds it took)."""
    import threading

    from torch_audit.runtime.dist import agree

    store = torch.distributed.HashStore()
    answers: dict[int, tuple] = {}

    def rank(me: int, clean: bool, delay: float) -> None:
        time.sleep(delay)
        t0 = time.monotonic()
        answers[me] = (agree(store, "s0", me, len(outcomes), clean, timeout), time.monotonic() - t0)

    threads = [threading.Thread(target=rank, args=(me, *o)) for me, o in outcomes.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return answers


def test_end_of_session_agreement_gathers_only_when_every_rank_left_cleanly():
    # all clean, arriving at different times: all gather (None), nobody waits for a timeout
    answers = _agree_in_threads({0: (True, 0.0), 1: (True, 0.2), 2: (True, 0.1)}, timeout=20)
    assert [answers[r][0] for r in range(3)] == [None, None, None]
    assert max(seconds for _, seconds in answers.values()) < 5
    # a rank that raised says so at once: the clean ranks report alone without waiting
    answers = _agree_in_threads({0: (True, 0.0), 1: (False, 0.2), 2: (True, 0.0)}, timeout=20)
    assert answers[0][0] == answers[2][0] == "rank 1 left its session with an exception"
    assert answers[0][1] < 5
    # a rank that does not arrive in time: the others give up after the timeout, and the
    # latecomer gets the same answer (it must not enter a collective alone either)
    answers = _agree_in_threads({0: (True, 0.0), 1: (True, 1.0)}, timeout=0.3)
    assert answers[0][0] == answers[1][0] == "rank 0 waited 0.3 s for the other ranks to leave their sessions"
    assert 0.3 <= answers[0][1] < 5


def test_notes_reach_the_session_report_and_the_run_preface():
    from torch_audit.runtime.audited_run import RunOutcome
    from torch_audit.runtime.run_report import preface as _preface
    from torch_audit.runtime.text_report import format_text

    note = "findings of rank 0 only; the other ranks' findings were not gathered: rank 1 left"
    assert format_text([], [note]).endswith(f"No runtime findings.\nNote: {note}.")
    preface = _preface("train.py", RunOutcome(findings=[], steps=2, notes=[note]))
    assert preface == f"torch-audit: audited 2 optimizer steps of train.py.\ntorch-audit: note: {note}."


def test_without_a_store_clean_ranks_gather_and_a_rank_that_raised_does_not(monkeypatch):
    from torch_audit.runtime import dist

    monkeypatch.setattr(dist, "_store", lambda: None)
    assert dist.check_in(True) is None
    assert dist.check_in(False) == dist.RAISED
