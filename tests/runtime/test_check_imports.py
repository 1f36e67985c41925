"""Runtime checks use the runtime through one facade, ``torch_audit.runtime.check_helpers``,
and their base class ``torch_audit.runtime.check`` (the static rules' twin is
``tests/test_rule_imports.py``): a check that imports a runtime module directly ties the
catalogue to the runtime's layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "rules" / "runtime"
ALLOWED = {"torch_audit", "torch_audit.findings", "torch_audit.rule", "torch_audit.runtime.check",
           "torch_audit.runtime.check_helpers"}


@pytest.mark.parametrize("path", sorted(RULES.glob("*.py")), ids=lambda p: p.name)
def test_runtime_check_imports_only_the_facade(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch_audit":
            if node.module not in ALLOWED:
                bad.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            bad += [f"line {node.lineno}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] == "torch_audit" and a.name not in ALLOWED]
    assert not bad, f"{path.name} reaches into the runtime; add what it needs to check_helpers: {bad}"


def test_the_facade_exports_what_it_defines_or_imports():
    import torch_audit.runtime.check_helpers as helpers

    public = {name for name in vars(helpers) if not name.startswith("_")} - {"annotations"}
    assert set(helpers.__all__) == public
