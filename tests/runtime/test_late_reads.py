"""The asynchronous read path of CUDA (flags copied to the host without waiting and delivered
one or more steps later) run on CPU: every fixture must give the same findings, with the same
steps and modules, as when the flags are read in the step."""

from __future__ import annotations

import json

import pytest
import torch

from torch_audit.runtime import deferred_reads as session_module

from harness import run_fixture
from harness import runtime_fixture_dirs as fixture_dirs

#: a copy is done at its first query, one flush after it started, as on an unloaded GPU; the
#: last one waits for the final flush at exit
LATENCY = 1


class SlowEvent:
    """Stands in for ``torch.cuda.Event``; copies finish in the order they started, as on one
    stream, because every flush queries every copy still in flight."""

    def __init__(self, log: list[str]) -> None:
        self.queries = 0
        self.log = log

    def query(self) -> bool:
        self.queries += 1
        done = self.queries >= LATENCY
        if done:
            self.log.append("late")
        return done

    def synchronize(self) -> None:
        self.queries = LATENCY
        self.log.append("waited")


@pytest.fixture
def late_reads_on_cpu(monkeypatch):
    log: list[str] = []

    def start_host_copy(flat: torch.Tensor):
        log.append("started")
        return SlowEvent(log), flat.detach().clone()  # the values as they are now, as a copy

    monkeypatch.setattr(session_module, "ASYNC_READ_DEVICES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(session_module, "start_host_copy", start_host_copy)
    return log


def _findings(session) -> list[str]:
    return sorted(json.dumps(f.to_dict(), sort_keys=True) for f in session.findings)


#: every script of every runtime fixture: the findings of bad.py, and the silence of good.py and
#: of the traps (trap_*.py), which need every check's late path as much
SCRIPTS = [p for d in fixture_dirs() for p in sorted(d.glob("*.py")) if p.name == "bad.py" or p.name == "good.py"
           or p.name.startswith("trap_")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_late_reads_give_the_findings_of_reads_in_the_step(script, monkeypatch, late_reads_on_cpu):
    late = _findings(run_fixture(script, sync="late"))
    with monkeypatch.context() as m:
        m.setattr(session_module, "ASYNC_READ_DEVICES", frozenset())
        in_step = _findings(run_fixture(script, sync="late"))
    assert late == in_step
    if late_reads_on_cpu.count("started") > 1:  # some reads arrived a flush later, the last at exit
        assert "late" in late_reads_on_cpu and late_reads_on_cpu[-1] == "waited"


def test_the_simulation_reaches_the_late_path(late_reads_on_cpu):
    bad = next(d for d in fixture_dirs() if d.name == "nonfinite_loss") / "bad.py"
    session = run_fixture(bad, sync="late")
    assert late_reads_on_cpu.count("started") >= 3, late_reads_on_cpu
    assert [f.code for f in session.findings] == ["TA701"]


def test_fail_fast_reads_in_the_step_even_where_reads_can_be_late(late_reads_on_cpu):
    from torch_audit.runtime import AuditFailure

    bad = next(d for d in fixture_dirs() if d.name == "nonfinite_loss") / "bad.py"
    with pytest.raises(AuditFailure):
        run_fixture(bad, fail_fast=True)  # sync="auto": late unless fail_fast
    assert "started" not in late_reads_on_cpu
