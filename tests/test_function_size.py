"""No function over ~80 lines or a cyclomatic complexity over ~20 in the drivers and reporters
(issue 20), unless a ``# long: <why it must be so>`` comment sits on the line above its ``def``
(or above its decorators).

Complexity is McCabe's, counted from CPython's AST as radon counts it: 1, plus one per ``if``,
``elif``, conditional expression, loop, ``except``, ``case``, comprehension ``for`` and ``if``,
and each extra operand of ``and``/``or``. Nested functions are measured on their own. Lines run
from the ``def`` to the last line of the body, docstring included.

Run as a script to print every function of the checked modules over half the limits.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 80
MAX_COMPLEXITY = 20
#: the drivers, the reporters and the runtime's session (auditor/ is torch_audit/)
CHECKED = sorted(
    [
        *(ROOT / "auditor" / name for name in ("cli.py", "output.py", "config.py", "lsp.py")),
        *(ROOT / "auditor" / "report").glob("*.py"),
        *(
            ROOT / "auditor" / "lint" / name
            for name in ("command.py", "fix_command.py", "options.py", "selection.py", "runner.py",
                         "autofix.py", "edits.py", "notebook.py", "add_noqa.py", "stdin.py", "baseline.py",
                         "show.py", "engine.py", "sources.py")
        ),
        ROOT / "auditor" / "lint" / "facts" / "untrusted.py",
        # the runtime's session, its hooks and torch-audit run's driver, and the integrations
        *(
            ROOT / "auditor" / "runtime" / f"{name}.py"
            for name in ("session", "hooks", "subscribers", "deferred_reads", "text_report", "run_command",
                         "audited_run", "run_monitor", "run_history", "run_report", "profile_command")
        ),
        *(ROOT / "auditor" / "integrations").glob("*.py"),
    ]
)


def complexity(fn: ast.AST) -> int:
    score = 1
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue  # measured on its own
        if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler)):
            score += 1
        elif isinstance(node, ast.comprehension):
            score += 1 + len(node.ifs)
        elif isinstance(node, ast.BoolOp):
            score += len(node.values) - 1
        elif sys.version_info >= (3, 10) and isinstance(node, ast.match_case):
            score += 1
        stack.extend(ast.iter_child_nodes(node))
    return score


def functions(path: Path):
    """``(qualified name, def line, lines, complexity, exempt)`` of every function in ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)

    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                above = lines[first - 2].strip() if first >= 2 else ""
                exempt = above.startswith("# long:") and len(above) > len("# long:") + 10
                yield name, child.lineno, child.end_lineno - child.lineno + 1, complexity(child), exempt
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _oversized():
    for path in CHECKED:
        for name, line, length, score, exempt in functions(path):
            if (length > MAX_LINES or score > MAX_COMPLEXITY) and not exempt:
                yield f"{path.relative_to(ROOT)}:{line}: {name}: {length} lines, complexity {score}"


def test_the_checked_modules_exist():
    assert all(path.is_file() for path in CHECKED), [p for p in CHECKED if not p.is_file()]


def test_no_oversized_function_in_the_drivers_and_reporters():
    found = list(_oversized())
    assert not found, (
        f"over {MAX_LINES} lines or complexity {MAX_COMPLEXITY}; split it, or say why it must be so in a "
        "`# long: ...` comment above the def:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("source,expected", [
    ("def f():\n    return 1\n", 1),
    ("def f(a, b):\n    if a and b or a:\n        pass\n    elif b:\n        pass\n", 5),
    ("def f(xs):\n    return [x for x in xs if x if not x]\n", 4),
    ("def f(x):\n    try:\n        pass\n    except A:\n        pass\n    except B:\n        pass\n"
     "    def g():\n        if x:\n            pass\n", 3),
])
def test_complexity_counts_as_radon_does(source, expected):
    assert complexity(ast.parse(source).body[0]) == expected


if __name__ == "__main__":
    for path in CHECKED:
        for name, line, length, score, exempt in functions(path):
            if length > MAX_LINES // 2 or score > MAX_COMPLEXITY // 2:
                flag = " (exempt)" if exempt else " <--" if length > MAX_LINES or score > MAX_COMPLEXITY else ""
                print(f"{path.relative_to(ROOT)}:{line}: {name}: {length} lines, complexity {score}{flag}")
