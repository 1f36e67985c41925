"""The long profile of tests/test_fuzz.py: the same properties, many more examples, a fresh seed.

    python benchmarks/fuzz_long.py [--scale 50] [--seed N] [--derandomize] [-k EXPR] [-n WORKERS]

``--scale`` multiplies every test's ``max_examples`` (the CI profile runs 40 generated programs,
5 libcst-generated programs, 150+60 mutated fixtures, 15 random-byte inputs, 40 fixer runs and
12 CLI runs; ``--scale 50`` runs 50 times that). Without ``--derandomize`` each run explores new
inputs (hypothesis prints the seed and, on failure, the falsifying example and a reproduction
blob). ``-n`` spreads the tests over pytest-xdist workers.

Prints per test the examples run and the time, then a one-line verdict; exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--derandomize", action="store_true", help="the fixed CI inputs, scaled")
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    ap.add_argument("-n", dest="workers", default="0", help="pytest-xdist workers (0: in-process)")
    args = ap.parse_args(argv)

    env = {
        **os.environ,
        "TORCH_AUDIT_FUZZ_SCALE": str(args.scale),
        "TORCH_AUDIT_FUZZ_RANDOM": "0" if args.derandomize else "1",
    }
    cmd = [
        sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_fuzz.py"), "-p", "no:cacheprovider",
        "-q", "--hypothesis-show-statistics", "-o", "addopts=", "--durations=0", "-n", args.workers,
    ]
    if args.seed is not None:
        cmd += [f"--hypothesis-seed={args.seed}"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    print(f"scale {args.scale}, {'derandomized' if args.derandomize else 'random'} inputs"
          + (f", seed {args.seed}" if args.seed is not None else ""), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr

    # hypothesis statistics: "tests/test_fuzz.py::name:" then "- during generate phase (N seconds):"
    # and "- N passing, M failing, and K invalid test cases"
    current = None
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*tests/test_fuzz\.py::(\S+):\s*$", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"- (\d+) passing(?: examples| test cases)?, (\d+) failing(?: examples| test cases)?", line)
        if m and current:
            passing, failing = int(m.group(1)), int(m.group(2))
            total += passing + failing
            print(f"  {current}: {passing} passing, {failing} failing")
        m = re.search(r"- Stopped because (.*)", line)
        if m and current:
            print(f"      stopped because {m.group(1)}")
    summary = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    if proc.returncode != 0:
        sys.stdout.write(out[-20000:])
    print(f"{total} examples in {wall:.0f} s wall; pytest: {summary[-1].strip('= ') if summary else '?'}")
    print("OK: no crash, no internal error" if proc.returncode == 0 else "FAIL: see the falsifying examples above")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
