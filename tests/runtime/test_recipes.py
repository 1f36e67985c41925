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
