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
        _ddp_worker.run, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
        join=False, start_method="fork",
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
    assert "TA701" in r0["printed"] and "rank=1" in r0["printed"]
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
