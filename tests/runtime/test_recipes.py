"""Runtime recipes (issue 19, "What done looks like"): fixtures/runtime/_recipes/*.py run under
every default and preview check; a file with an `# expect:` line gives exactly those codes, the
others (common training recipes that are correct) give none."""

from __future__ import annotations

import pytest

from .conftest import FIXTURES, expected_codes, run_fixture

RECIPES = sorted((FIXTURES / "_recipes").glob("*.py"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe(path):
    session = run_fixture(path, select=["ALL"])
    assert {f.code for f in session.findings} == expected_codes(path), session.report()
