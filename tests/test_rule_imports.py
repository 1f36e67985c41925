"""Static rules use the engine through one facade, ``torch_audit.lint.api``.

A rule that imports an engine module directly ties the catalogue to the engine's layout; the
facade is where a fact becomes available to rules (docs/writing-rules.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parent.parent / "rules" / "static"
ALLOWED = {"torch_audit.findings", "torch_audit.rule", "torch_audit.lint.api"}


@pytest.mark.parametrize("path", sorted(RULES.glob("*.py")), ids=lambda p: p.name)
def test_static_rule_imports_only_the_facade(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch_audit":
            if node.module not in ALLOWED:
                bad.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            bad += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "torch_audit"]
    assert not bad, f"{path.name} reaches into the engine; add what it needs to torch_audit/lint/api.py: {bad}"


def test_the_facade_exports_what_it_imports():
    import torch_audit.lint.api as api

    public = {name for name in vars(api) if not name.startswith("_")} - {"annotations"}
    assert set(api.__all__) == public
