"""Lint each project of a folder of real repositories twice: each file alone, and as a project
(the whole-program model), and print what the project model adds and removes.

    python benchmarks/whole_program_review.py CORPUS [--rules default|all] [--jobs N] > review.txt

CORPUS holds one folder per repository (see benchmarks/multifile_corpus.sh). Each repository is
linted from its own folder, as a user would run `torch-audit lint .` there. Lines are
`NEW|GONE|SAME repo/path:line: CODE message`, for reviewing by hand (verdicts go to
benchmarks/corpus-review/).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from torch_audit.catalog import load_catalog
from torch_audit.lint.discover import discover
from torch_audit.lint.engine import LintSettings
from torch_audit.lint.runner import lint_files


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--rules", choices=("default", "all"), default="default")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    catalog = load_catalog()
    rules = catalog.select(kind="static") if args.rules == "default" else catalog.of_kind("static")
    totals = {"NEW": 0, "GONE": 0, "SAME": 0}
    seconds = {False: 0.0, True: 0.0}
    for repo in sorted(p for p in args.corpus.resolve().iterdir() if p.is_dir()):
        os.chdir(repo)
        files = discover(["."]).files
        found = {}
        for whole in (False, True):
            start = time.perf_counter()
            results, _ = lint_files(files, LintSettings(rules=rules, whole_program=whole), jobs=args.jobs)
            seconds[whole] += time.perf_counter() - start
            found[whole] = {(f"{repo.name}/{f.path}", f.line, f.code, f.message) for r in results for f in r.findings}
        for label, items in (("NEW", found[True] - found[False]), ("GONE", found[False] - found[True]),
                             ("SAME", found[True] & found[False])):
            totals[label] += len(items)
            for path, line, code, message in sorted(items):
                print(f"{label} {path}:{line}: {code} {message}")
        sys.stdout.flush()
    print(f"# totals: {totals}; time alone {seconds[False]:.1f} s, as projects {seconds[True]:.1f} s "
          f"({seconds[True] / max(seconds[False], 1e-9):.2f}x)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
