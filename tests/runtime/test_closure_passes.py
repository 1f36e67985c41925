"""An optimizer's closure evaluated many times inside one ``step()`` (LBFGS's line search):
the first evaluation is watched like any training pass, the re-evaluations run with the module
hooks off and no call window (``closure_passes="first"``, the default), and the report says
in how many steps re-evaluations ran unwatched; ``closure_passes="all"`` watches every one (issue 19, item 8)."""

from __future__ import annotations

import runpy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

import torch_audit
from torch_audit.runtime.subscribers import Subscriber

from harness import RUNTIME_FIXTURES

#: the silent recipe: LBFGS with a closure, 4 steps of up to 5 iterations
LBFGS_RECIPE = RUNTIME_FIXTURES / "_recipes" / "lbfgs_closure.py"


class Passes(Subscriber):
    events = frozenset({"root_forward", "backward"})

    def __init__(self) -> None:
        self.forwards = 0
        self.backwards = 0

    def on_root_forward(self, module):
        self.forwards += 1

    def on_backward(self, event):
        self.backwards += 1


def _lbfgs(steps: int = 3, max_iter: int = 5, poison_at: int | None = None):
    """A small LBFGS fit; the closure records whether torch's global forward hooks were
    installed when each evaluation's forward had run, and multiplies the output by NaN at evaluation
    ``poison_at`` (counted from 1 over the whole fit)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=max_iter,
                            tolerance_grad=0.0, tolerance_change=0.0)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    hooked: list[list[bool]] = []

    def closure():
        opt.zero_grad()
        out = model(x)
        hooked[-1].append(bool(nn_module._global_forward_hooks))  # after the call began
        if poison_at is not None and sum(map(len, hooked)) == poison_at:
            out = out * float("nan")
        loss = F.mse_loss(out, y)
        loss.backward()
        return loss

    def fit():
        for _ in range(steps):
            hooked.append([])
            opt.step(closure)

    return fit, hooked


def test_reevaluations_run_without_module_hooks_and_are_counted():
    fit, hooked = _lbfgs()
    passes = Passes()
    with torch_audit.audit(config=False) as session:
        session.subscribe(passes)
        fit()
        assert nn_module._global_forward_hooks  # on again after each step
    evaluations = sum(map(len, hooked))
    assert evaluations > 3 * 2  # LBFGS re-evaluated its closure
    assert all(step[0] and not any(step[1:]) for step in hooked), hooked
    assert passes.forwards == passes.backwards == 3  # the first evaluation of each step
    assert session.unwatched_steps == 3
    assert any("in 3 optimizer steps, the closure's re-evaluations inside step() ran unwatched"
               in note for note in session.notes), session.notes
    assert "closure_passes='all'" in session.report()


def test_all_watches_every_evaluation():
    fit, hooked = _lbfgs()
    passes = Passes()
    with torch_audit.audit(config=False, closure_passes="all") as session:
        session.subscribe(passes)
        fit()
    evaluations = sum(map(len, hooked))
    assert all(all(step) for step in hooked)
    assert passes.forwards == passes.backwards == evaluations
    assert session.unwatched_steps == 0 and not session.notes


def test_a_nonfinite_reevaluation_is_still_reported_at_the_step():
    # evaluation 3 is a re-evaluation inside the first step: unwatched by default, but the
    # update it feeds makes the parameters non-finite, which the step's checks read
    fit, _ = _lbfgs(poison_at=3)
    with torch_audit.audit(config=False) as session:
        fit()
    by_code = {f.code: f for f in session.findings}
    assert by_code["TA703"].step == 0, session.report()  # the parameters after the first step
    # the pass that made it was not watched; the next step's first pass starts from NaN weights
    assert "TA704" not in by_code or by_code["TA704"].step > 0, session.report()
    if "TA704" in by_code:  # listed as what follows from the parameters, not as the cause
        assert "(follow-on of TA703 at step 0)" in session.report()

    fit, _ = _lbfgs(poison_at=3)
    with torch_audit.audit(config=False, closure_passes="all") as session:
        fit()
    activation = [f for f in session.findings if f.code == "TA704"]
    assert activation and activation[0].step == 0, session.report()


def test_the_first_evaluation_is_fully_audited():
    fit, _ = _lbfgs(poison_at=1)
    with torch_audit.audit(config=False) as session:
        fit()
    assert any(f.code == "TA704" for f in session.findings), session.report()


def test_a_step_that_raises_in_a_reevaluation_rearms_at_the_next_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=4, tolerance_grad=0.0, tolerance_change=0.0)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    calls = []

    def closure(fail_at=None):
        calls.append(1)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("data loader died")
        return loss

    passes = Passes()
    with torch_audit.audit(config=False) as session:
        session.subscribe(passes)
        with pytest.raises(RuntimeError):
            opt.step(lambda: closure(fail_at=2))  # raises in the first re-evaluation
        assert not nn_module._global_forward_hooks  # left off: no hook of ours saw the raise
        before = passes.forwards
        opt = torch.optim.LBFGS(model.parameters(), max_iter=4)  # the raise broke LBFGS's state
        opt.step(closure)
        assert passes.forwards == before + 1  # the next step's first evaluation is watched
        assert nn_module._global_forward_hooks
        F.mse_loss(model(x), y).backward()  # and a pass outside any step after it
        assert passes.forwards == before + 2


def test_a_closure_without_backward_is_watched_every_time():
    # nothing to tell a re-evaluation from the first pass: all are watched
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    passes = Passes()
    with torch_audit.audit(config=False) as session:
        session.subscribe(passes)

        def closure():
            for _ in range(3):
                model(x)
            return torch.zeros(())

        opt.step(closure)
    assert passes.forwards == 3 and session.unwatched_steps == 0


def test_closure_passes_is_validated():
    with pytest.raises(ValueError, match="closure_passes must be 'first' or 'all'"):
        torch_audit.audit(config=False, closure_passes="some")


def test_run_takes_closure_passes():
    from click.testing import CliRunner

    from torch_audit.runtime.run_command import run

    script = str(LBFGS_RECIPE)
    default = CliRunner().invoke(run, [script])
    assert default.exit_code == 0, default.output
    assert "the closure's re-evaluations inside step() ran unwatched" in default.output
    every = CliRunner().invoke(run, ["--closure-passes", "all", script])
    assert every.exit_code == 0, every.output
    assert "unwatched" not in every.output
    bad = CliRunner().invoke(run, ["--closure-passes", "some", script])
    assert bad.exit_code == 2 and "'some' is not one of 'first', 'all'" in bad.output


@pytest.mark.parametrize("passes", ["first", "all"])
def test_lbfgs_trains_bitwise_identically_under_the_audit(passes):
    # the silent LBFGS recipe, run as a script: its module-level model after training
    def final_parameters(audited: bool) -> list:
        if audited:
            with torch_audit.audit(config=False, closure_passes=passes):
                model = runpy.run_path(str(LBFGS_RECIPE))["model"]
        else:
            model = runpy.run_path(str(LBFGS_RECIPE))["model"]
        return [p.detach().clone() for p in model.parameters()]

    plain, audited = final_parameters(False), final_parameters(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, audited))
