"""`torch-audit run` on unmodified pytorch/examples scripts: findings and whole-script cost.

Each example runs as its README says (`python main.py FLAGS`), with the script's own flags making
it small, and under `torch-audit run`, in interleaved pairs (plain first in even pairs, audited
first in odd ones, so that a drift of the machine's load hits both). It reports, per example, the
findings of the audited run (there should be none: these are healthy scripts), whether both exit
statuses agree, and the median over pairs of the audited/plain ratios of wall-clock time and of
the children's CPU time (user + system; on a shared machine the wall clock mostly measures the
neighbours). Both runs use one intra-op thread by default (`--threads`): with several, waiting
for busy cores dominates small models' times.

The examples are not part of this repository and nothing here downloads them (no network at run
time): give a checkout of https://github.com/pytorch/examples, or a git directory of one, with
`--examples PATH` (or `TORCH_AUDIT_EXAMPLES`). The files are copied to a temporary folder first.
Datasets are replaced by small synthetic ones (the scripts' own download or data files are not
used): a Zipf-distributed word corpus for word_language_model, sine waves made by
generate_sine_wave.py's own formula with fewer and shorter series for time_sequence_prediction.
matplotlib, which time_sequence_prediction imports only to plot, is replaced by a stub when it
is not installed (in both runs). `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` is set for both runs: the
examples `torch.load` whole models and numpy arrays, which torch >= 2.6 refuses by default.
Both runs also count the garbage collector's full collections during the script (not the
interpreter's last one at exit), with a ``sitecustomize`` that only listens: ``torch-audit run``
freezes its start-up objects out of the collector while the script runs
(``auditor/runtime/startup_objects.py``), so a full collection of a plain run that the audited
run does not have, or makes cheaper, is a saving the wall ratio includes; the "full GCs" column
shows it, and the "without full GCs" ratio leaves every full collection out of both runs' wall
times: torch-audit's own cost, neither charged nor credited for the collector. regression trains until the loss is small from a random target, so its length varies several-fold
between runs: both runs execute a small wrapper that seeds torch and runs the unmodified script
with `runpy.run_path`. The first row is not an example: a 3-line script (import torch, one
backward), whose difference is `torch-audit run`'s fixed cost (start-up, configuration, session,
report, exit); the "extra s" column is the median over pairs of audited minus plain wall time.

    python benchmarks/runtime_examples.py --examples ~/src/pytorch-examples --pairs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclasses.dataclass
class Example:
    name: str
    folder: str  # inside the examples checkout
    argv: list[str]  # the script and its flags; {data} and {work} are filled in
    exercises: str
    setup: Callable[[Path, Path], None] | None = None  # (example folder, work folder)
    #: seed torch before the script runs (both runs): for a script whose length is random
    seed: int | None = None
    #: the source of a script written here instead of taken from the checkout
    source: str | None = None


# -- synthetic data ------------------------------------------------------------------------------


def _wikitext_like(folder: Path, work: Path) -> None:
    """train/valid/test.txt of Zipf-distributed words, the format data.Corpus reads."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 1500), ("valid", 150), ("test", 150)):
        with open(data / f"{split}.txt", "w") as f:
            for _ in range(lines):
                f.write(" " + " ".join(rng.choices(vocab, weights, k=20)) + " \n")


def _sine_waves(folder: Path, work: Path) -> None:
    """traindata.pt by generate_sine_wave.py's formula, with 12 series of 120 points."""
    code = (
        "import numpy as np, torch\n"
        "np.random.seed(2)\n"
        "T, L, N = 20, 120, 12\n"
        "x = np.empty((N, L), 'int64')\n"
        "x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)\n"
        "torch.save(np.sin(x / 1.0 / T).astype('float64'), open('traindata.pt', 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True)


#: torch-audit run's fixed cost alone: start-up, the session, the report and the exit
STARTUP_SCRIPT = """import torch
x = torch.randn(4, 4, requires_grad=True)
(x * 2).sum().backward()
"""

#: runs an example unmodified after seeding torch (``{script}`` and ``{seed}`` filled in)
SEEDED_WRAPPER = """# written by benchmarks/runtime_examples.py: seed torch, then run the example unmodified
import runpy
import sys

import torch

torch.manual_seed({seed})
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""

#: counts the full collections during the script and their time, written at exit (before the
#: interpreter's final collection) to the file named by TA_BENCH_GC_LOG
GC_PROBE = """# written by benchmarks/runtime_examples.py: count full garbage collections
import atexit, gc, json, os, time

_log = os.environ.get("TA_BENCH_GC_LOG")
_full = []


def _listen(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            _full.append(-time.perf_counter())
        elif _full:
            _full[-1] += time.perf_counter()


def _write():
    with open(_log, "w") as f:
        json.dump({"full": len(_full), "ms": 1000 * sum(_full)}, f)


if _log:
    gc.callbacks.append(_listen)
    atexit.register(_write)
"""

EXAMPLES = [
    Example("start-up only (a 3-line script, not an example)", "_startup", ["tiny.py"],
            "torch-audit run's fixed cost: imports, configuration, session, report, exit",
            source=STARTUP_SCRIPT),
    Example("word_language_model (LSTM)", "word_language_model",
            ["main.py", "--data", "{data}", "--epochs", "1", "--emsize", "64", "--nhid", "64",
             "--save", "{work}/model.pt"],
            "hand-written SGD update, gradient clipping, validation, torch.save(model)",
            _wikitext_like),
    Example("word_language_model (Transformer, AdamW)", "word_language_model",
            ["main.py", "--data", "{data}", "--epochs", "1", "--emsize", "64", "--nhid", "64",
             "--model", "Transformer", "--use-optimizer", "--lr", "0.001", "--save", "{work}/model.pt"],
            "nn.TransformerEncoder built and pickled whole (torch.save(model)), AdamW",
            _wikitext_like),
    Example("time_sequence_prediction", "time_sequence_prediction", ["train.py", "--steps", "2"],
            "LBFGS with a closure (about 20 forward/backward passes a step)", _sine_waves),
    Example("regression", "regression", ["main.py"],
            "hand-written SGD update until the loss is small (no torch.optim optimizer)",
            # its target is random and it trains until the loss is small: unseeded, its length
            # varies several-fold from run to run, and so would the ratio of a pair
            seed=0),
]


# -- running -------------------------------------------------------------------------------------


def _copy_examples(source: Path, dest: Path, folders: list[str]) -> None:
    """Copy ``folders`` of a checkout, or of a git directory without a work tree (`git archive`;
    files absent from a partial mirror are skipped: the data is synthetic anyway)."""
    if not folders:
        return
    if (source / folders[0]).is_dir():
        for name in folders:
            shutil.copytree(source / name, dest / name, dirs_exist_ok=True)
        return
    if (source / "repo" / "HEAD").is_file():  # the search tool's fetch: <mirror>/repo
        source = source / "repo"
    found = subprocess.run(["git", f"--git-dir={source}", "ls-tree", "-r", "--name-only", "HEAD",
                            *folders], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"{source}: neither a pytorch/examples checkout nor its git directory "
                         f"({found.stderr.strip().splitlines()[-1] if found.stderr.strip() else 'git failed'})")
    listing = found.stdout.split()
    for path in listing:
        if path.endswith((".py", ".txt", ".md")) and "/data/" not in path:
            blob = subprocess.run(["git", f"--git-dir={source}", "show", f"HEAD:{path}"],
                                  capture_output=True)
            if blob.returncode == 0:
                (dest / path).parent.mkdir(parents=True, exist_ok=True)
                (dest / path).write_bytes(blob.stdout)


def _stub_matplotlib(where: Path) -> Path | None:
    try:
        import matplotlib  # noqa: F401
        return None
    except ImportError:
        pass
    pkg = where / "matplotlib"
    pkg.mkdir(parents=True, exist_ok=True)
    stub = "def __getattr__(name):\n    return lambda *a, **k: None\n"
    (pkg / "__init__.py").write_text(stub)
    (pkg / "pyplot.py").write_text(stub)
    return where


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess, dict]:
    """Wall and CPU seconds of ``cmd``, its result, and its full collections (``GC_PROBE``)."""
    log = Path(env["TA_BENCH_GC_DIR"]) / "gc.json"
    log.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**env, "TA_BENCH_GC_LOG": str(log)},
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    gc_stats = json.loads(log.read_text()) if log.exists() else {"full": 0, "ms": 0.0}
    return wall, cpu, done, gc_stats


def _compile_torch_audit() -> None:
    """Byte-compile torch-audit's own modules first, as installing the package does: both runs
    set PYTHONDONTWRITEBYTECODE, so a checkout's stale bytecode (every module edited since the
    last import that could write it) would be compiled again at every audited start, tens of
    milliseconds that no installed copy pays."""
    import compileall
    import importlib.util

    for name in ("torch_audit", "torch_audit.rules"):
        spec = importlib.util.find_spec(name)
        for path in (spec.submodule_search_locations or ()) if spec else ():
            compileall.compile_dir(path, quiet=1)


def run_example(ex: Example, checkout: Path, work: Path, pairs: int, env: dict[str, str]) -> dict:
    folder = checkout / ex.folder
    case = work / "".join(c if c.isalnum() else "_" for c in ex.name)
    case.mkdir(parents=True, exist_ok=True)
    if ex.source is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ex.argv[0]).write_text(ex.source)
    if ex.setup is not None:
        ex.setup(folder, case)
    argv = [a.format(data=case / "data", work=case) for a in ex.argv]
    if ex.seed is not None:
        wrapper = f"_seeded_{argv[0]}"
        (folder / wrapper).write_text(SEEDED_WRAPPER.format(seed=ex.seed, script=argv[0]))
        argv[0] = wrapper
    report = case / "findings.json"
    plain_cmd = [sys.executable, *argv]
    audited_cmd = [sys.executable, "-m", "torch_audit", "run", "--no-progress", "--output-format", "json",
                   "-o", str(report), *argv]
    walls: list[float] = []
    walls_ex_gc: list[float] = []
    cpus: list[float] = []
    extra: list[float] = []
    statuses: set[tuple[int, int]] = set()
    notes: set[str] = set()
    times: dict[str, list[float]] = {"plain": [], "audited": []}
    full_gcs: dict[str, list[dict]] = {"plain": [], "audited": []}
    for i in range(pairs):
        order = [("plain", plain_cmd), ("audited", audited_cmd)]
        if i % 2:
            order.reverse()
        got = {}
        for kind, cmd in order:
            got[kind] = _timed(cmd, folder, env)
            times[kind].append(got[kind][0])
            full_gcs[kind].append(got[kind][3])
        (pw, pc, pd, pg), (aw, ac, ad, ag) = got["plain"], got["audited"]
        walls_ex_gc.append((aw - ag["ms"] / 1000) / (pw - pg["ms"] / 1000))
        statuses.add((pd.returncode, ad.returncode))
        if pd.returncode != 0:
            raise SystemExit(f"{ex.name}: the plain run failed ({pd.returncode}):\n{pd.stderr[-2000:]}")
        walls.append(aw / pw)
        extra.append(aw - pw)
        cpus.append(ac / pc if pc else float("nan"))
        notes.update(line.split("note: ", 1)[1].rstrip(".") for line in ad.stderr.splitlines()
                     if line.startswith("torch-audit: note: "))
    findings = json.loads(report.read_text()) if report.exists() else None
    return {
        "example": ex.name,
        "exercises": ex.exercises,
        "pairs": pairs,
        "plain_s": statistics.median(times["plain"]),
        "audited_s": statistics.median(times["audited"]),
        "extra_s": statistics.median(extra),
        "wall_ratio": statistics.median(walls),
        "cpu_ratio": statistics.median(cpus),
        "wall_ratio_ex_gc": statistics.median(walls_ex_gc),
        # median count and time of the full collections during a run (not the one at exit)
        "full_gcs": {kind: (statistics.median(g["full"] for g in runs),
                            statistics.median(g["ms"] for g in runs)) for kind, runs in full_gcs.items()},
        "exit_statuses": sorted(statuses),
        "findings": [f"{f['code']} {f['name']}" for f in findings] if findings is not None else None,
        "notes": sorted(notes),
        "threads": env.get("OMP_NUM_THREADS", ""),
        "is_example": ex.source is None,
    }


def markdown(rows: list[dict]) -> str:
    out = ["| example | exercises | plain s | audited s | extra s | wall ratio | CPU ratio | full GCs (plain, run) | wall ratio without full GCs | exit (plain, run) | findings |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |"]
    for r in rows:
        found = "none" if r["findings"] == [] else ", ".join(r["findings"] or ["(no report)"])
        if any("no torch.optim optimizer stepped" in n for n in r["notes"]):
            found += " (no optimizer step: step checks did not run, as the report says)"
        statuses = ", ".join(f"{p}, {a}" for p, a in r["exit_statuses"])
        gcs = ", ".join(f"{n:g} ({ms:.0f} ms)" for n, ms in (r["full_gcs"]["plain"], r["full_gcs"]["audited"]))
        out.append(f"| {r['example']} | {r['exercises']} | {r['plain_s']:.2f} | {r['audited_s']:.2f} | "
                   f"{r['extra_s']:+.2f} | {r['wall_ratio']:.3f}x | {r['cpu_ratio']:.3f}x | {gcs} | "
                   f"{r['wall_ratio_ex_gc']:.3f}x | {statuses} | {found} |")
    examples = [r for r in rows if r.get("is_example", True)] or rows
    walls = [r["wall_ratio"] for r in examples]
    cpus = [r["cpu_ratio"] for r in examples]
    ex_gc = [r["wall_ratio_ex_gc"] for r in examples]
    out.append("")
    out.append(f"Median over examples: wall {statistics.median(walls):.3f}x, CPU {statistics.median(cpus):.3f}x, "
               f"wall without full GCs {statistics.median(ex_gc):.3f}x "
               f"({rows[0]['pairs']} interleaved pairs each, OMP_NUM_THREADS={rows[0]['threads']}).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=Path, default=os.environ.get("TORCH_AUDIT_EXAMPLES"),
                        help="a checkout (or git directory) of github.com/pytorch/examples")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved plain/audited pairs per example")
    parser.add_argument("--only", action="append", default=[], help="run only examples whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of both runs (1: a shared machine's load decides less)")
    args = parser.parse_args(argv)
    if args.examples is None or not Path(args.examples).exists():
        parser.error("give a checkout of https://github.com/pytorch/examples with --examples PATH "
                     "(nothing is downloaded)")
    chosen = [e for e in EXAMPLES if not args.only or any(o in e.name for o in args.only)]
    _compile_torch_audit()
    with tempfile.TemporaryDirectory(prefix="ta-examples-") as tmp:
        tmp_path = Path(tmp)
        checkout = tmp_path / "examples"
        checkout.mkdir()
        _copy_examples(Path(args.examples), checkout, sorted({e.folder for e in chosen if e.source is None}))
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "NO_COLOR": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(args.threads)}
        probe = tmp_path / "gc_probe"
        probe.mkdir()
        (probe / "sitecustomize.py").write_text(GC_PROBE)
        env["TA_BENCH_GC_DIR"] = str(probe)
        paths = [str(probe)]
        stub = _stub_matplotlib(tmp_path / "stubs")
        if stub is not None:
            paths.append(str(stub))
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        rows = []
        for ex in chosen:
            row = run_example(ex, checkout, tmp_path / "work", args.pairs, env)
            print(f"{row['example']}: wall {row['wall_ratio']:.3f}x, CPU {row['cpu_ratio']:.3f}x, "
                  f"without full GCs {row['wall_ratio_ex_gc']:.3f}x, full GCs {row['full_gcs']}, "
                  f"findings {row['findings']}", file=sys.stderr, flush=True)
            rows.append(row)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
