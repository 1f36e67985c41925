"""Lint speed, quoted as ratios measured in one run.

    python benchmarks/lint_speed.py [CORPUS]        (default: /work/corpus, or $TORCH_AUDIT_CORPUS)

The corpus is fetched with `benchmarks/fetch_corpus.sh CORPUS all` (never committed). Reports:

1. the 37 transformers files of issue 2 on one core: libcst parse, parse plus one bare visitor
   walk (the floor), and `torch-audit` with every default rule (in-process, no cache), as a ratio
   to the floor;
2. the full corpus: `--jobs 1` against `--jobs 2` (fresh processes, no cache), lines per second
   per worker, with the CPU time of the parent process and of its workers and the CPU the rest of
   the machine used meanwhile: a wall-clock ratio means something only on an idle machine, the
   CPU-time estimate (jobs-1 CPU against parent CPU + workers' CPU / 2) also on a busy one;
3. a warm-cache re-run over the full corpus;
4. `torch-audit lint one_file.py` from process start to exit (median of 7, with compiled
   bytecode as users have it), next to `python -c "import libcst"`, the floor of any run that
   parses: a small file that imports torch, and the README's example training script;
5. the whole-program model: the corpus linted each file alone and as a project (CPU time, one
   core), a re-lint after editing one model file of a warm corpus, and one file that imports
   two local modules from process start to exit.
"""

from __future__ import annotations

import argparse
import json
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
        sys.exit(f"no transformers under {corpus}: run benchmarks/fetch_corpus.sh {corpus} libraries")
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
    from torch_audit.lint.engine import LintSettings
    from torch_audit.lint.sources import lint_source

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
        # as `torch-audit lint` does: the files linked into a project first, then each linted
        from torch_audit.lint.project import build_project

        settings.project = build_project([Path(p) for p, _ in sources], contents={Path(p): d for p, d in sources})
        for path, data in sources:
            lint_source(path, data, settings)
        settings.project = None

    def audit_alone():
        for path, data in sources:
            lint_source(path, data, settings)

    audit()  # warm imports and caches
    t_parse = best_of(repeat, parse)
    t_floor = best_of(repeat, parse_walk)
    t_alone = best_of(repeat, audit_alone)
    t_audit = best_of(repeat, audit)
    print(f"## {len(files)} transformers files ({', '.join(MODELS)}), {lines:,} lines, one core, best of {repeat}")
    print(f"libcst parse                 {t_parse:7.2f} s")
    print(f"parse + bare walk (floor)    {t_floor:7.2f} s")
    print(f"torch-audit, each file alone {t_alone:7.2f} s   = {t_alone / t_floor:.2f}x the floor")
    print(f"torch-audit, {len(settings.rules)} default rules {t_audit:7.2f} s   = {t_audit / t_floor:.2f}x the floor "
          f"(target <= 1.0x; the files linked as a project: {t_audit / t_alone:.2f}x each file alone)")
    print(f"lines per second (one worker): {lines / t_audit:,.0f}")
    print()


#: Runs the CLI and, at exit, writes the CPU time of this process and of its (joined) workers.
_CPU_WRAPPER = """
import atexit, json, os, resource, sys
def _report():
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["LINT_SPEED_CPU"], "w") as fh:
        json.dump([own.ru_utime + own.ru_stime, workers.ru_utime + workers.ru_stime], fh)
atexit.register(_report)
from torch_audit.cli import main
main(sys.argv[1:], prog_name="torch-audit")
"""


def _env() -> dict[str, str]:
    # Users have compiled bytecode: do not measure recompiling torch-audit at every start.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _machine_busy() -> float | None:
    """CPU-seconds every process on the machine has used so far (Linux), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_cli(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch_audit", "lint", "--exit-zero", *args], cwd=cwd, env=_env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def run_cli_cpu(args: list[str], cwd: Path) -> tuple[float, float, float, float | None]:
    """Wall time, CPU of the main process, CPU of its workers, CPU of everything else."""
    cpu_file = cwd / "cpu.json"
    busy = _machine_busy()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CPU_WRAPPER, "lint", "--exit-zero", *args], cwd=cwd,
                   env={**_env(), "LINT_SPEED_CPU": str(cpu_file)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = _machine_busy()
    own, workers = json.loads(cpu_file.read_text())
    others = None if busy is None or after is None else max(0.0, after - busy - own - workers)
    return wall, own, workers, others


def bench_corpus(corpus: Path) -> None:
    files = [p for p in corpus.rglob("*.py")]
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    print(f"## {corpus}: {len(files):,} files, {lines:,} lines")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        w1, p1, k1, o1 = run_cli_cpu(["--no-cache", "--jobs", "1", str(corpus)], work)
        w2, p2, k2, o2 = run_cli_cpu(["--no-cache", "--jobs", "2", str(corpus)], work)
        c1 = p1 + k1
        print(f"--jobs 1  {w1:7.1f} s  ({lines / w1:,.0f} lines/s per worker); CPU {c1:.1f} s")
        print(f"--jobs 2  {w2:7.1f} s  = {w1 / w2:.2f}x faster than --jobs 1 (target >= 1.7x); "
              f"CPU: main process {p2:.1f} s, workers {k2:.1f} s")
        print(f"          CPU-time estimate for an idle machine: {c1:.1f} / ({p2:.1f} + {k2:.1f} / 2) = "
              f"{c1 / (p2 + k2 / 2):.2f}x (the main process's CPU counted as serial; the workers' "
              f"extra CPU over --jobs 1: {100 * (k2 / c1 - 1):+.0f}%)")
        if o1 is not None and o2 is not None:
            print(f"          other processes meanwhile: {o1 / w1:.1f} cores (jobs 1), {o2 / w2:.1f} cores "
                  f"(jobs 2) on average; the wall-clock ratio holds only near 0")
        run_cli(["--jobs", "2", str(corpus)], work)  # fill the cache
        warm = min(run_cli(["--jobs", "2", str(corpus)], work) for _ in range(3))
        print(f"warm-cache re-run {warm:5.2f} s (target < 3 s)")
        shutil.rmtree(work / ".torch_audit_cache", ignore_errors=True)
    print()


#: the smallest file the linter parses: it imports torch and has no finding
SMALL_FILE = "import torch\n\nx = torch.zeros(3)\n"


def _start_to_exit(cmd: list[str], cwd: Path, runs: int = 7) -> list[float]:
    subprocess.run(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return times


def bench_one_file() -> None:
    example = Path(__file__).resolve().parent.parent / "fixtures" / "examples" / "train.py"
    print("## one file, process start to exit (median and best of 7, compiled bytecode)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "small.py").write_text(SMALL_FILE)
        shutil.copy(example, work / "train.py")
        floor = _start_to_exit([sys.executable, "-c", "import libcst"], work)
        print(f'python -c "import libcst"           median {statistics.median(floor):.3f} s, best {min(floor):.3f} s (the floor)')
        lines = example.read_text(encoding="utf-8").count("\n")
        for name, what in (("small.py", "3 lines, no finding"), ("train.py", f"fixtures/examples/train.py, {lines} lines, with findings")):
            cmd = [sys.executable, "-m", "torch_audit", "lint", "--exit-zero", "--no-cache", name]
            times = _start_to_exit(cmd, work)
            print(f"torch-audit lint {name:<12}       median {statistics.median(times):.3f} s, best {min(times):.3f} s "
                  f"({what}; target < 0.4 s)")


def bench_whole_program(corpus: Path) -> None:
    """The cost of linking files into a project: the same files linted each alone and as a
    project, in this process (one core, no cache), CPU time so that neighbours matter less."""
    from torch_audit.catalog import load_catalog
    from torch_audit.lint.discover import discover
    from torch_audit.lint.engine import LintSettings
    from torch_audit.lint.runner import lint_files

    files = discover([str(corpus)]).files
    rules = load_catalog().select(kind="static")
    times = {}
    for whole in (False, True, False, True):
        start = time.process_time()
        lint_files(files, LintSettings(rules=rules, whole_program=whole), jobs=1)
        times.setdefault(whole, []).append(time.process_time() - start)
    alone, linked = min(times[False]), min(times[True])
    print(f"## whole-program cost on {corpus} ({len(files):,} files, one core, CPU time, best of 2)")
    print(f"each file alone   {alone:7.1f} s")
    print(f"as a project      {linked:7.1f} s   = {linked / alone:.2f}x (target <= 1.15x)")
    print()


#: a project for the incremental and one-file measurements: a script and two local modules
_PROJECT = {
    "models.py": "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                 "        super().__init__()\n        self.fc = nn.Linear(8, 2)\n\n"
                 "    def forward(self, x):\n        return self.fc(x)\n",
    "losses.py": "import torch.nn as nn\n\ncriterion = nn.CrossEntropyLoss()\n",
    "train.py": "import torch\n\nfrom losses import criterion\nfrom models import Net\n\n\n"
                "def main(loader):\n    model = Net()\n    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                "    for x, y in loader:\n        opt.zero_grad()\n        criterion(model(x), y).backward()\n"
                "        opt.step()\n",
}


def bench_incremental(corpus: Path) -> None:
    """Edit one model file of a warm corpus and lint it again (the edit changes what the
    module's forward returns, so the module's dependents are linted again too)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, text in _PROJECT.items():
            (work / "proj" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "proj" / name).write_text(text)
        args = ["--jobs", "2", str(corpus), str(work / "proj")]
        run_cli(args, work)  # fill the cache
        warm = run_cli(args, work)
        model = work / "proj" / "models.py"
        model.write_text(model.read_text().replace("return self.fc(x)", "return self.fc(x).softmax(-1)"))
        edited = run_cli(args, work)
        print(f"## incremental: {corpus} warm, then one model file edited")
        print(f"warm re-run            {warm:5.2f} s")
        print(f"after editing models.py {edited:5.2f} s (target < 2 s; it and its dependents are linted again)")
        print()


def bench_one_file_with_imports() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, text in _PROJECT.items():
            (work / name).write_text(text)
        times = _start_to_exit([sys.executable, "-m", "torch_audit", "lint", "--exit-zero", "--no-cache", "train.py"], work)
        print(f"torch-audit lint train.py (imports two local modules) median {statistics.median(times):.3f} s, "
              f"best {min(times):.3f} s (target < 0.5 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", default=os.environ.get("TORCH_AUDIT_CORPUS", "/work/corpus"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-full", action="store_true", help="only the 37-file and one-file measurements")
    parser.add_argument("--only-jobs", action="store_true", help="only the --jobs 1 / --jobs 2 comparison (and the warm cache)")
    parser.add_argument("--full-path", help="measure jobs scaling and the warm cache on this part of the corpus instead")
    parser.add_argument("--whole-program-path", help="measure the whole-program cost on this part of the corpus")
    parser.add_argument("--only-whole-program", action="store_true",
                        help="only the whole-program measurements (cost, incremental, one file with imports)")
    parser.add_argument("--only-incremental", action="store_true",
                        help="only the re-lint after editing one file of the warm corpus")
    args = parser.parse_args()
    if args.only_incremental:
        bench_incremental(Path(args.corpus))
        return
    if args.only_whole_program:
        corpus = Path(args.corpus)
        bench_whole_program(Path(args.whole_program_path) if args.whole_program_path else corpus)
        bench_incremental(corpus)
        bench_one_file_with_imports()
        return
    corpus = Path(args.corpus)
    if not args.only_jobs:
        bench_floor(transformers_files(corpus), args.repeat)
    if not args.skip_full:
        bench_corpus(Path(args.full_path) if args.full_path else corpus)
    if not args.only_jobs:
        bench_whole_program(Path(args.whole_program_path) if args.whole_program_path else corpus)
        bench_incremental(corpus)
        bench_one_file()
        bench_one_file_with_imports()


if __name__ == "__main__":
    main()
