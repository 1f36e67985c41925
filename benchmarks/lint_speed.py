"""Lint speed, quoted as ratios measured in one run.

    python benchmarks/lint_speed.py [CORPUS]        (default: /work/corpus, or $TORCH_AUDIT_CORPUS)

The corpus is fetched with `../shared/corpus/fetch.sh CORPUS all` (never committed). Reports:

1. the 37 transformers files of issue 2 on one core: libcst parse, parse plus one bare visitor
   walk (the floor), and `torch-audit` with every default rule (in-process, no cache), as a ratio
   to the floor;
2. the full corpus: `--jobs 1` against `--jobs 2` (fresh processes, no cache), lines per second
   per worker;
3. a warm-cache re-run over the full corpus;
4. `torch-audit lint one_file.py` from process start to exit (median of 7).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libcst as cst

MODELS = ("bert", "llama", "vit", "gpt2", "t5", "whisper", "clip")


class BareVisitor(cst.CSTVisitor):
    """Visits every node and does nothing: the cost of walking a libcst tree."""


def transformers_files(corpus: Path) -> list[Path]:
    roots = sorted(corpus.glob("transformers-*/transformers/models"))
    if not roots:
        sys.exit(f"no transformers under {corpus}: run ../shared/corpus/fetch.sh {corpus} libraries")
    return sorted(p for m in MODELS for p in (roots[0] / m).glob("*.py"))


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_floor(files: list[Path], repeat: int) -> None:
    from torch_audit.catalog import load_catalog
    from torch_audit.lint.engine import LintSettings, lint_source

    sources = [(str(p), p.read_bytes()) for p in files]
    lines = sum(data.count(b"\n") for _, data in sources)
    texts = [data.decode("utf-8") for _, data in sources]
    settings = LintSettings(rules=load_catalog().select(kind="static"))

    def parse():
        for text in texts:
            cst.parse_module(text)

    def parse_walk():
        for text in texts:
            cst.parse_module(text).visit(BareVisitor())

    def audit():
        for path, data in sources:
            lint_source(path, data, settings)

    audit()  # warm imports and caches
    t_parse = best_of(repeat, parse)
    t_floor = best_of(repeat, parse_walk)
    t_audit = best_of(repeat, audit)
    print(f"## {len(files)} transformers files ({', '.join(MODELS)}), {lines:,} lines, one core, best of {repeat}")
    print(f"libcst parse                 {t_parse:7.2f} s")
    print(f"parse + bare walk (floor)    {t_floor:7.2f} s")
    print(f"torch-audit, {len(settings.rules)} default rules {t_audit:7.2f} s   = {t_audit / t_floor:.2f}x the floor (target <= 2.5x)")
    print(f"lines per second (one worker): {lines / t_audit:,.0f}")
    print()


def run_cli(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch_audit", "lint", "--exit-zero", *args], cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def bench_corpus(corpus: Path) -> None:
    files = [p for p in corpus.rglob("*.py")]
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    print(f"## {corpus}: {len(files):,} files, {lines:,} lines")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t1 = run_cli(["--no-cache", "--jobs", "1", str(corpus)], work)
        t2 = run_cli(["--no-cache", "--jobs", "2", str(corpus)], work)
        print(f"--jobs 1  {t1:7.1f} s  ({lines / t1:,.0f} lines/s per worker)")
        print(f"--jobs 2  {t2:7.1f} s  = {t1 / t2:.2f}x faster than --jobs 1 (target >= 1.7x)")
        run_cli(["--jobs", "2", str(corpus)], work)  # fill the cache
        warm = min(run_cli(["--jobs", "2", str(corpus)], work) for _ in range(3))
        print(f"warm-cache re-run {warm:5.2f} s (target < 3 s)")
        shutil.rmtree(work / ".torch_audit_cache", ignore_errors=True)
    print()


def bench_one_file(corpus: Path) -> None:
    target = next(iter(transformers_files(corpus)))
    with tempfile.TemporaryDirectory() as tmp:
        times = [run_cli(["--no-cache", str(target)], Path(tmp)) for _ in range(7)]
    print("## one file, process start to exit")
    print(f"torch-audit lint {target.name}: median {statistics.median(times):.3f} s (target < 0.4 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", default=os.environ.get("TORCH_AUDIT_CORPUS", "/work/corpus"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="only the 37-file and one-file measurements")
    parser.add_argument("--full-path", help="measure jobs scaling and the warm cache on this part of the corpus instead")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    bench_floor(transformers_files(corpus), args.repeat)
    if not args.skip_full:
        bench_corpus(Path(args.full_path) if args.full_path else corpus)
    bench_one_file(corpus)


if __name__ == "__main__":
    main()
