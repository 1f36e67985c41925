"""Lint a large corpus and CPython's own standard library; count internal errors (must be 0).

    python benchmarks/corpus_lint.py [PATH ...] [--no-stdlib] [--jobs N] [--prefilter]
                                     [--timeout S] [--slowest N] [--json OUT]

PATH defaults to /work/corpus (fetched with benchmarks/fetch_corpus.sh, about 6,000 files). The
interpreter's ``Lib/`` folder (``sysconfig.get_paths()["stdlib"]``) is added unless
``--no-stdlib`` (without its ``site-packages`` unless ``--with-site-packages``). Every ``.py``/``.pyi`` file is linted (no excludes, no .gitignore), with every
static rule including preview and opt-in ones, straight through the engine
(:func:`torch_audit.lint.sources.lint_source`) in worker processes, so each file is timed on its
own. By default the "mentions torch" prefilter is switched off, so that the parser, the facts and
every rule really see all of the standard library (which never mentions torch); ``--prefilter``
keeps the normal behaviour.

Prints, per tree: files, files parsed, skipped (over the size limit, too deeply nested,
prefiltered), findings per rule, syntax-error/unreadable counts, internal errors with the rule
and file, crashes of the engine itself (an exception out of ``lint_source``), per-file timeouts,
and the slowest files. Exits 1 when any internal error, crash or timeout happened.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import re
import resource
import signal
import sys
import sysconfig
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = Path("/work/corpus")


def _settings(prefilter: bool):
    from torch_audit.catalog import load_catalog
    from torch_audit.lint.engine import LintSettings

    catalog = load_catalog()
    rules = [r for r in catalog.of_kind("static")]
    settings = LintSettings(rules=rules, verbose=True, report_unused_suppressions=True)
    if not prefilter:
        # b"" is in every file: the prefilter lets everything through.
        settings = _NoPrefilter(**{f: getattr(settings, f) for f in settings.__dataclass_fields__})
    return settings


def _make_no_prefilter():
    from torch_audit.lint.engine import LintSettings

    class NoPrefilter(LintSettings):
        @property
        def triggers(self) -> tuple[bytes, ...]:
            return (b"",)

    return NoPrefilter


_NoPrefilter = None  # set in main (after the import path is known)
_settings_obj = None
_timeout = 60


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _init(settings, timeout):
    global _settings_obj, _timeout
    _settings_obj, _timeout = settings, timeout
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _alarm)
    # Warm up (lazy imports, tables) so that the first file of each worker is not timed with it.
    from torch_audit.lint.sources import lint_source

    lint_source("<warm-up>", b"import torch\nx = torch.softmax(torch.zeros(1), 0)\n", settings)


def _lint_one(path: str) -> dict:
    from torch_audit.lint.sources import lint_source

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return {"path": path, "io_error": str(exc), "seconds": 0.0}
    start = time.perf_counter()
    cpu0 = time.process_time()
    signal.alarm(_timeout)
    try:
        result = lint_source(path, data, _settings_obj)
    except _Timeout:
        return {"path": path, "timeout": True, "seconds": time.perf_counter() - start, "bytes": len(data)}
    except BaseException:
        return {"path": path, "crash": traceback.format_exc(), "seconds": time.perf_counter() - start, "bytes": len(data)}
    finally:
        signal.alarm(0)
    seconds = time.perf_counter() - start
    return {
        "path": path,
        "bytes": len(data),
        "seconds": seconds,
        "cpu": time.process_time() - cpu0,
        "codes": [f.code for f in result.findings],
        "internal": [f.message for f in result.findings if f.code == "TA003"],
        "internal_errors": result.internal_errors,
        "tracebacks": result.tracebacks,
        "skipped": result.skipped,
        "notes": result.notes,
    }


def collect(root: Path, skip_dirs: tuple[str, ...] = ()) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs)
        for name in sorted(filenames):
            if name.endswith((".py", ".pyi")):
                p = os.path.join(dirpath, name)
                if os.path.isfile(p):
                    out.append(p)
    return out


def run_tree(label: str, root: Path, settings, jobs: int, timeout: int, slowest: int,
             skip_dirs: tuple[str, ...] = ()) -> dict:
    files = collect(root, skip_dirs)
    # Big files first so that no worker ends with a giant.
    files.sort(key=lambda p: -os.path.getsize(p))
    start = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    rows = []
    with ctx.Pool(jobs, initializer=_init, initargs=(settings, timeout), maxtasksperchild=200) as pool:
        for i, row in enumerate(pool.imap_unordered(_lint_one, files, chunksize=4), 1):
            rows.append(row)
            if sys.stderr.isatty() and i % 100 == 0:
                sys.stderr.write(f"\r{label}: {i}/{len(files)}")
    wall = time.perf_counter() - start
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 60 + "\r")

    per_rule = collections.Counter()
    internal = []
    crashes = [r for r in rows if "crash" in r]
    timeouts = [r for r in rows if r.get("timeout")]
    io_errors = [r for r in rows if "io_error" in r]
    skipped = collections.Counter()
    skipped_notes: list[str] = []
    parsed = 0
    for r in rows:
        for code in r.get("codes", ()):
            per_rule[code] += 1
        if r.get("internal_errors") or r.get("internal"):
            internal.append(r)
        if r.get("skipped"):
            note = " ".join(r.get("notes", ()))
            if "limit" in note:
                skipped["over the size limit"] += 1
            elif "nested" in note:
                skipped["nested too deeply"] += 1
            elif "parser cannot read" in note:
                skipped["valid Python libcst cannot parse"] += 1
            elif note:
                skipped["other: " + note.split(": skipped, ", 1)[-1][:60]] += 1
            else:
                skipped["prefiltered (no trigger word)"] += 1
            if note:
                skipped_notes.append(note)
        elif "codes" in r:
            parsed += 1
    total_seconds = sum(r["seconds"] for r in rows)
    total_cpu = sum(r.get("cpu", 0.0) for r in rows)
    # CPU time, not wall time: on a shared machine wall time measures the neighbours
    slow = sorted(rows, key=lambda r: -r.get("cpu", r["seconds"]))[:slowest]
    return {
        "label": label,
        "root": str(root),
        "files": len(files),
        "parsed": parsed,
        "bytes": sum(r.get("bytes", 0) for r in rows),
        "wall_seconds": round(wall, 1),
        "wall_seconds_in_lint": round(total_seconds, 1),
        "cpu_seconds_in_lint": round(total_cpu, 1),
        "findings": sum(per_rule.values()),
        "per_rule": dict(sorted(per_rule.items())),
        "skipped": dict(skipped),
        "skipped_notes": skipped_notes,
        "syntax_or_unreadable": sorted(r["path"] for r in rows if {"TA001", "TA002"} & set(r.get("codes", ()))),
        "internal_errors": [
            {"path": r["path"], "messages": r.get("internal", []), "tracebacks": r.get("tracebacks", [])}
            for r in internal
        ],
        "crashes": [{"path": r["path"], "traceback": r["crash"]} for r in crashes],
        "timeouts": [r["path"] for r in timeouts],
        "io_errors": [{"path": r["path"], "error": r["io_error"]} for r in io_errors],
        "slowest": [
            {"path": r["path"], "cpu": round(r.get("cpu", 0.0), 3), "seconds": round(r["seconds"], 3),
             "kb": round(r.get("bytes", 0) / 1024)}
            for r in slow
        ],
    }


def print_summary(s: dict) -> None:
    print(f"== {s['label']}: {s['root']}")
    print(f"files {s['files']}  parsed {s['parsed']}  {s['bytes'] / 2**20:.1f} MB  "
          f"wall {s['wall_seconds']} s  (CPU time summed over files {s['cpu_seconds_in_lint']} s, "
          f"{1000 * s['cpu_seconds_in_lint'] / max(s['parsed'], 1):.0f} ms per parsed file)")
    print(f"skipped: {s['skipped'] or 'none'}")
    for note in s["skipped_notes"][:20]:
        print(f"  {note}")
    if s["syntax_or_unreadable"]:
        print(f"syntax-error/unreadable-file findings in {len(s['syntax_or_unreadable'])} file(s):")
        for path in s["syntax_or_unreadable"][:20]:
            print(f"  {path}")
    print(f"findings {s['findings']}; per rule:")
    for code, n in s["per_rule"].items():
        print(f"  {code} {n}")
    print(f"internal errors: {len(s['internal_errors'])} file(s)")
    for item in s["internal_errors"]:
        print(f"  {item['path']}: {'; '.join(item['messages'])}")
    print(f"engine crashes: {len(s['crashes'])}")
    for item in s["crashes"]:
        print(f"  {item['path']}:\n{item['traceback']}")
    print(f"timeouts: {len(s['timeouts'])} {s['timeouts'][:10]}")
    if s["io_errors"]:
        print(f"unreadable: {len(s['io_errors'])}")
    print("slowest files (CPU seconds):")
    for item in s["slowest"]:
        print(f"  {item['cpu']:8.3f} s  {item['kb']:6d} KB  {item['path']}")
    print()


def main(argv: list[str] | None = None) -> int:
    global _NoPrefilter
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--no-stdlib", action="store_true", help="do not lint CPython's Lib/")
    ap.add_argument("--with-site-packages", action="store_true",
                    help="also lint Lib/site-packages (numpy, scipy, ... when installed there)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prefilter", action="store_true", help="keep the 'mentions torch' prefilter")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per file before it counts as a hang")
    ap.add_argument("--slowest", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the full summary here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    _NoPrefilter = _make_no_prefilter()
    settings = _settings(args.prefilter)
    print(f"torch-audit static rules: {len(settings.rules)} (all, including preview and opt-in); "
          f"prefilter {'on' if args.prefilter else 'off'}; jobs {args.jobs}; python {sys.version.split()[0]}")
    trees = [(f"corpus {p.name}", p, ()) for p in (args.paths or [DEFAULT_CORPUS])]
    if not args.no_stdlib:
        skip = () if args.with_site_packages else ("site-packages", "dist-packages")
        label = "CPython Lib" + (" with site-packages" if args.with_site_packages else "")
        trees.append((label, Path(sysconfig.get_paths()["stdlib"]), skip))
    summaries = []
    for label, root, skip_dirs in trees:
        if not root.exists():
            print(f"{label}: {root} does not exist (fetch it with benchmarks/fetch_corpus.sh)", file=sys.stderr)
            return 2
        s = run_tree(label, root, settings, args.jobs, args.timeout, args.slowest, skip_dirs)
        print_summary(s)
        summaries.append(s)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of a worker: {peak:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"summaries": summaries, "peak_worker_rss_mb": round(peak)}, indent=1))
    bad = sum(len(s["internal_errors"]) + len(s["crashes"]) + len(s["timeouts"]) for s in summaries)
    print("OK: zero internal errors" if not bad else f"FAIL: {bad} file(s) with internal errors, crashes or timeouts")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
