"""The package's import graph, read statically: no cycle, and rules import only their facades.

Every ``import`` counts, including the ones inside functions: a function-level import is how
start-up stays lazy (docs/architecture.md), not a licence to call back up into a driver. The
direction is ``cli → commands → engine/report``, never back. Imports under
``if TYPE_CHECKING:`` never run and are left out.

The modules are named as Python imports them: setuptools' ``package-dir`` maps ``torch_audit``
to ``auditor/`` and ``torch_audit.rules`` to ``rules/``. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. A module's parent packages are not counted
as its dependencies (every module would otherwise depend on ``torch_audit/__init__.py``).

Run this file as a script to print the graph's cycles and the edges that close them.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _package_dirs() -> dict[str, Path]:
    """setuptools' ``package-dir`` (pyproject.toml): import name → directory; the fixtures are
    data (examples shown as rule docs), not modules anything imports."""
    from torch_audit.tomlcompat import toml_parser  # tomllib, or tomli before Python 3.11

    mapping = toml_parser().loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items() if name != "torch_audit.fixtures"}


PACKAGE_DIRS = _package_dirs()

#: What a rule module may import from torch_audit (docs/writing-rules.md): the rule base classes,
#: the finding type and its side's facade: ``torch_audit.lint.api`` for static rules,
#: ``torch_audit.runtime.check`` and ``torch_audit.runtime.check_helpers`` for runtime checks
#: (tests/runtime/test_check_imports.py checks how they import them).
RULE_FINDINGS = {"torch_audit", "torch_audit.findings", "torch_audit.rule"}
RULE_FACADES = {
    "static": ("torch_audit.lint.api",),
    "runtime": ("torch_audit.runtime.check", "torch_audit.runtime.check_helpers"),
}

def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, directory in PACKAGE_DIRS.items():
        for path in directory.rglob("*.py"):
            rel = path.relative_to(directory).with_suffix("")
            parts = [p for p in rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            # rules/ lives inside torch_audit's namespace but in its own directory
            if package == "torch_audit" and name.startswith("torch_audit.rules"):
                continue
            out[name] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(path) else module.split(".")[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, dict[str, int]]:
    return import_graph()


def import_graph() -> dict[str, dict[str, int]]:
    """``module → {imported module: line of the first import}``, within the package."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(name, path, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import a.b.c` of a name inside a.b
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    modules = _modules()
    members = set(component)
    lines = [" ↔ ".join(m.removeprefix("torch_audit.") for m in component)]
    for m in component:
        for target, line in sorted(graph[m].items()):
            if target in members:
                rel = modules[m].relative_to(ROOT)
                lines.append(f"    {rel}:{line}: {m} → {target}")
    return "\n".join(lines)


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (the edges that close them):\n" + "\n".join(
        describe(c, graph) for c in found
    )


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # torch_audit.audit is loaded on first use, inside __getattr__
    assert "torch_audit.runtime.session" in graph["torch_audit"]
    assert "torch_audit.lint.engine" in graph["torch_audit.lint.command"]


def _rule_modules() -> list[tuple[str, str]]:
    return sorted(
        (name, name.split(".")[2])
        for name in _modules()
        if name.startswith(("torch_audit.rules.static.", "torch_audit.rules.runtime."))
    )


def rule_violations(module: str, kind: str, graph: dict[str, dict[str, int]]) -> list[str]:
    """The imports of rule ``module`` beyond the finding type, the rule classes and its facade."""
    return [
        f"line {line}: {target}"
        for target, line in graph[module].items()
        if not target.startswith("torch_audit.rules") and target not in RULE_FINDINGS
        and target not in RULE_FACADES[kind]
    ]


@pytest.mark.parametrize("module,kind", _rule_modules(), ids=[m.removeprefix("torch_audit.rules.") for m, _ in _rule_modules()])
def test_rules_import_only_the_facades(module, kind):
    bad = rule_violations(module, kind, _graph())
    assert not bad, f"{module} reaches into the engine ({bad}); add what it needs to {RULE_FACADES[kind][-1]}"


def test_the_static_facade_exports_what_it_imports():
    import torch_audit.lint.api as api

    public = {name for name in vars(api) if not name.startswith("_")} - {"annotations"}
    assert set(api.__all__) == public


def test_the_checks_catch_a_cycle_and_an_engine_import():
    graph = {m: dict(edges) for m, edges in _graph().items()}
    graph["torch_audit.output"]["torch_audit.cli"] = 1  # a driver's helper calling back up
    assert any({"torch_audit.cli", "torch_audit.output"} <= set(c) for c in cycles(graph))
    for module, kind in _rule_modules()[:1] + _rule_modules()[-1:]:  # a runtime and a static rule
        graph[module]["torch_audit.lint.engine"] = 7
        assert rule_violations(module, kind, graph) == ["line 7: torch_audit.lint.engine"]


if __name__ == "__main__":  # every cycle, the tolerated edges included
    g = import_graph()
    for c in cycles(g):
        print(describe(c, g), end="\n\n")
    sys.exit(1 if cycles(g) else 0)


def test_tomllib_is_imported_only_with_the_tomli_fallback():
    """``tomllib`` is Python 3.11's; on 3.10 the package depends on the ``tomli`` backport
    (pyproject.toml). An unguarded ``import tomllib`` crashed ``torch-audit run --option`` on
    3.10, which CI (3.11) cannot see: every import of it sits in a version test or a ``try``,
    next to ``tomli``."""
    unguarded = []
    for directory in PACKAGE_DIRS.values():
        for path in directory.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.If, ast.Try)):
                    for child in ast.iter_child_nodes(node):
                        if isinstance(child, ast.Import) and any(a.name == "tomllib" for a in child.names):
                            unguarded.append(f"{path.relative_to(ROOT)}:{child.lineno}")
    assert unguarded == [], "import tomllib outside a version test or try (use torch_audit.tomlcompat.toml_parser)"
