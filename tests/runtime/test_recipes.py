"""Runtime recipes (issue 19, "What done looks like"): fixtures/runtime/_recipes/*.py run under
every default and preview check; a file with an `# expect:` line gives exactly those codes, the
others (common training recipes that are correct) give none."""

from __future__ import annotations

import pytest

from harness import RUNTIME_FIXTURES as FIXTURES, expected_codes, run_fixture

RECIPES = sorted((FIXTURES / "_recipes").glob("*.py"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe(path):
    session = run_fixture(path, select=["ALL"])
    assert {f.code for f in session.findings} == expected_codes(path), session.report()


def test_softmax_into_nll_loss_is_reported_at_both_calls():
    session = run_fixture(FIXTURES / "_recipes" / "softmax_into_nll_loss.py", select=["ALL"])
    found = [f for f in session.findings if f.code == "TA707"]
    assert len(found) == 2, session.report()  # F.nll_loss and nn.NLLLoss
    assert sorted(f.line for f in found) == [14, 15], session.report()
    assert all(f.message.startswith("nll_loss input at") for f in found), session.report()
    assert all("log_softmax" in f.help for f in found)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_audited_in_bursts_finds_nothing_new(path, monkeypatch):
    """Sampling never makes a finding of its own: each recipe with a warm-up of 1 pass, probes
    of 2, bursts of 2 and gaps of 0.3 ms (a pass or so) gives at most the codes it gives audited
    whole. The recipes are short (3 to 12 steps), so this is a smoke test; the long recipes of
    test_pass_sampling.py switch hundreds of times."""
    from torch_audit.runtime.pass_sampling import PassSampler

    for name, value in (("WARMUP", 1), ("PROBE", 2), ("BURST", 2), ("MAX_GAP_S", 0.0003),
                        ("REPROBE", 2)):
        monkeypatch.setattr(PassSampler, name, value)
    session = run_fixture(path, select=["ALL"], budget=1e-4)
    assert {f.code for f in session.findings} <= expected_codes(path), session.report()
