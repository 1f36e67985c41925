"""Resource bounds of the linter and the runtime auditor, measured (CPU time and peak RSS).

    python benchmarks/resource_bounds.py [--files 100000] [--steps 10000] [--only NAME ...]

Each case runs in a fresh process, so its peak RSS (``getrusage`` ``ru_maxrss``; the process is
started from this small script, so nothing large is inherited across exec) is its own:

- ``big-file``: a 20 MB Python file (skipped: the limit is 2 MB), and a file just under 2 MB
  (parsed: the largest file the linter will ever parse);
- ``long-function``: one function of 10,000 lines, with a bug on the last line that must be found;
- ``nesting``: 1,000 nested parentheses (CPython refuses more than 200: a syntax-error finding)
  and a 50,000-term ``a + b + ...`` chain (legal, skipped as nested too deeply);
- ``tree``: a directory tree of ``--files`` files (default 100,000: 1,000 folders of 100; one file
  in 50 mentions torch and has two findings), linted with ``--jobs 2``;
- ``runtime-long``: ``--steps`` (default 10,000) tiny training steps with a finding on every step
  under ``torch_audit.audit()``; Python heap growth measured with tracemalloc between step 1,000
  and the end.

Prints one line per case; exits 1 when a bound is exceeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

FIXABLE = b"""import torch
import torch.nn.functional as F


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        out = model.forward(x)
    return F.cross_entropy(F.softmax(out, dim=1), y)
"""

LINT = textwrap.dedent("""
    import json, resource, sys, time
    from torch_audit.catalog import load_catalog
    from torch_audit.lint.engine import LintSettings
    from torch_audit.lint.sources import lint_source
    s = LintSettings(rules=load_catalog().of_kind("static"), report_unused_suppressions=True)
    data = open(sys.argv[1], "rb").read()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.process_time()
    r = lint_source(sys.argv[1], data, s)
    cpu = time.process_time() - t
    print(json.dumps({"cpu": cpu, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "base_mb": base / 1024, "findings": [[f.code, f.line, f.message[:80]] for f in r.findings],
                      "notes": r.notes, "skipped": r.skipped, "internal_errors": r.internal_errors}))
""")

CLI = textwrap.dedent("""
    import resource, sys
    from torch_audit.cli import main
    try:
        main(sys.argv[1:])
    finally:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        sys.stderr.write(f"\\n@@usage {s.ru_utime + s.ru_stime:.2f} {s.ru_maxrss / 1024:.0f} "
                         f"{c.ru_utime + c.ru_stime:.2f} {c.ru_maxrss / 1024:.0f}\\n")
""")

RUNTIME = textwrap.dedent("""
    import gc, json, resource, sys, time, tracemalloc
    import torch
    from torch import nn
    import torch.nn.functional as F
    import torch_audit
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps = int(sys.argv[1])
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)

    def loop(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x)[:, :1], y).backward()  # cross-entropy-single-class, every step
            opt.step()

    t = time.process_time(); loop(1000); plain = (time.process_time() - t) / 1000
    with torch_audit.audit(select=["ALL"], preview=True) as session:
        loop(1000)
        gc.collect(); tracemalloc.start()
        a, _ = tracemalloc.get_traced_memory()
        t = time.process_time()
        loop(steps - 1000)
        audited = (time.process_time() - t) / (steps - 1000)
        gc.collect()
        b, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(json.dumps({"growth": b - a, "steps": steps, "plain_ms": plain * 1000, "audited_traced_ms": audited * 1000,
                      "findings": [[f.code, f.step, f.count] for f in session.findings],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def lint_one(path: Path) -> dict:
    proc = subprocess.run([PY, "-c", LINT, str(path)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout)


def check(ok: bool, label: str, problems: list[str]) -> str:
    if not ok:
        problems.append(label)
    return "ok" if ok else "EXCEEDED"


def case_big_file(tmp: Path, problems: list[str]) -> None:
    line = b"x = torch.softmax(torch.zeros(3), dim=0)\n"
    big = tmp / "huge.py"
    big.write_bytes(b"import torch\n" + line * (20 * 2**20 // len(line)))
    r = lint_one(big)
    ok = r["skipped"] and any("over the 2 MB limit" in n for n in r["notes"]) and r["cpu"] < 1
    print(f"big-file 20 MB: skipped={r['skipped']} note={r['notes'][0]!r} cpu {r['cpu']:.3f} s "
          f"peak RSS {r['rss_mb']:.0f} MB  [{check(ok, 'big-file 20 MB', problems)}]")
    # just under the limit: realistic code (a fixture, repeated), parsed and analysed
    unit = (ROOT / "fixtures" / "examples" / "train.py").read_bytes()
    near = tmp / "near_limit.py"
    near.write_bytes(unit * ((2 * 2**20 - 1) // len(unit)))
    r = lint_one(near)
    ok = not r["skipped"] and r["internal_errors"] == 0 and r["cpu"] < 300
    print(f"big-file {near.stat().st_size / 2**20:.2f} MB (just under the limit): {len(r['findings'])} findings, "
          f"cpu {r['cpu']:.1f} s, peak RSS {r['rss_mb']:.0f} MB (before parsing {r['base_mb']:.0f} MB)  "
          f"[{check(ok, 'big-file near limit', problems)}]")


def case_long_function(tmp: Path, problems: list[str]) -> None:
    body = "".join(f"    h{i} = torch.relu(h{i - 1}) * {i}\n" for i in range(1, 10_000))
    src = ("import torch\nimport torch.nn.functional as F\n\n\ndef f(x, y):\n    h0 = x\n" + body
           + "    return F.cross_entropy(F.softmax(h9999, dim=1), y)\n")
    path = tmp / "long.py"
    path.write_text(src)
    r = lint_one(path)
    found = ["TA101", 10_006] in [f[:2] for f in r["findings"]]
    ok = found and r["cpu"] < 30
    print(f"long-function 10,000 lines ({len(src) / 1024:.0f} KB): last-line bug found={found}, "
          f"cpu {r['cpu']:.1f} s, peak RSS {r['rss_mb']:.0f} MB  [{check(ok, 'long-function', problems)}]")


def case_nesting(tmp: Path, problems: list[str]) -> None:
    path = tmp / "parens.py"
    path.write_bytes(b"import torch\nx = " + b"(" * 1000 + b"torch.zeros(1)" + b")" * 1000 + b"\n")
    r = lint_one(path)
    ok = [f[0] for f in r["findings"]] == ["TA001"] and r["cpu"] < 5
    print(f"nesting 1,000 parentheses: {r['findings']}, cpu {r['cpu']:.3f} s  [{check(ok, 'nesting parens', problems)}]")
    path = tmp / "chain.py"
    path.write_bytes(b"import torch\nx = " + b"torch.zeros(1) + " * 50_000 + b"1\n")
    r = lint_one(path)
    ok = r["skipped"] and r["cpu"] < 10
    print(f"nesting 50,000-term sum: skipped={r['skipped']} {r['notes']}, cpu {r['cpu']:.2f} s  "
          f"[{check(ok, 'nesting chain', problems)}]")


def case_tree(tmp: Path, problems: list[str], n_files: int) -> None:
    root = tmp / "tree"
    per_dir = 100
    t = time.perf_counter()
    torch_files = 0
    for d in range(max(1, n_files // per_dir)):
        folder = root / f"pkg{d // 100}" / f"sub{d}"
        folder.mkdir(parents=True)
        for i in range(per_dir):
            if (d * per_dir + i) % 50 == 0:
                data = FIXABLE
                torch_files += 1
            else:
                data = f"def f{i}(a):\n    return a + {i}\n".encode()
            (folder / f"m{i}.py").write_bytes(data)
    made = time.perf_counter() - t
    t = time.perf_counter()
    proc = subprocess.run(
        [PY, "-c", CLI, "lint", ".", "--no-cache", "--jobs", "2", "--output-format", "json"],
        cwd=root, capture_output=True, text=True, timeout=3600,
    )
    wall = time.perf_counter() - t
    usage = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@usage")][-1].split()[1:]
    self_cpu, self_rss, child_cpu, child_rss = map(float, usage)
    findings = json.loads(proc.stdout)
    ok = proc.returncode == 1 and len(findings) == 2 * torch_files and self_rss < 500
    print(f"tree {n_files:,} files ({torch_files:,} mention torch; created in {made:.0f} s): exit {proc.returncode}, "
          f"{len(findings):,} findings, wall {wall:.0f} s, CPU parent {self_cpu:.0f} s + workers {child_cpu:.0f} s, "
          f"peak RSS parent {self_rss:.0f} MB, worker {child_rss:.0f} MB  [{check(ok, 'tree', problems)}]")


def case_runtime(problems: list[str], steps: int) -> None:
    proc = subprocess.run([PY, "-c", RUNTIME, str(steps)], capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    r = json.loads(proc.stdout)
    per_step = r["growth"] / (steps - 1000)
    ok = per_step < 20 and len(r["findings"]) < 10
    print(f"runtime-long {steps:,} steps, a finding every step: findings {r['findings']}, "
          f"heap growth {r['growth'] / 1024:.1f} KB over {steps - 1000:,} steps ({per_step:.1f} B/step), "
          f"step {r['plain_ms']:.2f} ms plain / {r['audited_traced_ms']:.2f} ms audited+traced, "
          f"peak RSS {r['rss_mb']:.0f} MB  [{check(ok, 'runtime-long', problems)}]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["big-file", "long-function", "nesting", "tree", "runtime-long"])
    args = ap.parse_args(argv)
    only = set(args.only or ["big-file", "long-function", "nesting", "tree", "runtime-long"])
    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ta-bounds-"))
    try:
        if "big-file" in only:
            case_big_file(tmp, problems)
        if "long-function" in only:
            case_long_function(tmp, problems)
        if "nesting" in only:
            case_nesting(tmp, problems)
        if "tree" in only:
            case_tree(tmp, problems, args.files)
        if "runtime-long" in only:
            case_runtime(problems, args.steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("OK: every bound held" if not problems else f"FAIL: {', '.join(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
