"""Autofix over a real corpus: copy it, run `torch-audit lint --fix --unsafe-fixes`, check.

    python benchmarks/fix_corpus.py [CORPUS] [--jobs N] [--keep] [--update-docs docs/autofix.md]

CORPUS defaults to /work/corpus (see benchmarks/fetch_corpus.sh). The corpus itself is never
touched: it is copied to a temporary directory first. For every file the fix changed, the
benchmark checks that it

- still parses (libcst, and CPython's compiler when the original compiled),
- lost no comment (the multiset of comment tokens is unchanged),
- no longer reports the fixed findings: no finding with an applicable fix is left in it, and
  no rule reports more findings in it than before (a fix must not create new findings).

It prints files changed, fixes applied (per rule) and failures (which must be 0), and with
``--update-docs`` writes that summary between the ``fix-corpus`` markers of the given file.
"""

from __future__ import annotations

import argparse
import ast
import collections
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

import libcst as cst

DEFAULT_CORPUS = Path("/work/corpus")
START, END = "<!-- fix-corpus:start -->", "<!-- fix-corpus:end -->"


def comments(data: bytes) -> collections.Counter | None:
    try:
        toks = tokenize.tokenize(io.BytesIO(data).readline)
        return collections.Counter(t.string.rstrip() for t in toks if t.type == tokenize.COMMENT)
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, IndentationError):
        return None


def compiles(data: bytes) -> bool:
    try:
        compile(data, "<fixed>", "exec", ast.PyCF_ONLY_AST)
        return True
    except (SyntaxError, ValueError):
        return False


def libcst_parses(data: bytes) -> bool:
    try:
        cst.parse_module(data)
        return True
    except Exception:
        return False


def lint_json(root: Path, jobs: int, *extra: str, paths: list[str] | None = None) -> tuple[list[dict], subprocess.CompletedProcess]:
    cmd = [
        sys.executable, "-m", "torch_audit", "lint", *(paths or [str(root)]), "--no-cache", "--exit-zero",
        "--output-format", "json", "--jobs", str(jobs), *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr)
    try:
        return json.loads(proc.stdout or "[]"), proc
    except json.JSONDecodeError:
        sys.stderr.write(proc.stdout[:2000] + proc.stderr[-2000:])
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the fixed copy and print where it is")
    ap.add_argument("--update-docs", type=Path, default=None)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="fix-corpus-"))
    copy = tmp / "corpus"
    shutil.copytree(args.corpus, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    # a config at the copy's root keeps discovery from picking up a project config elsewhere
    (copy / "pyproject.toml").exists() or (copy / "pyproject.toml").write_text("[tool.torch-audit]\n")
    py_files = sorted(p for p in copy.rglob("*.py") if p.is_file() and not p.is_symlink())
    originals = {p: p.read_bytes() for p in py_files}

    t0 = time.perf_counter()
    before, _ = lint_json(copy, args.jobs, "--unsafe-fixes")
    t_lint = time.perf_counter() - t0
    # only the files with a fix need --fix (the others cannot change); their findings after
    # the fix come from the same run
    fixable_paths = sorted({f["path"] for f in before if f.get("fix")})
    t0 = time.perf_counter()
    if fixable_paths:
        after, proc = lint_json(copy, args.jobs, "--fix", "--unsafe-fixes", paths=fixable_paths)
    else:
        after, proc = [], subprocess.CompletedProcess([], 0, "", "Fixed 0 findings (0 remaining)")
    fixed_files = {str(Path(p).resolve()) for p in fixable_paths}
    after = after + [f for f in before if str(Path(f["path"]).resolve()) not in fixed_files]
    t_fix = time.perf_counter() - t0
    m = re.search(r"Fixed (\d+) findings? \((\d+) remaining\)", proc.stderr)
    applied = int(m.group(1)) if m else -1
    internal_errors = [f for f in after if f["name"] == "internal-error" and "the fix of" in f["message"]]

    def by_file(findings):
        out = collections.defaultdict(list)
        for f in findings:
            out[str(Path(f["path"]).resolve())].append(f)
        return out

    before_by, after_by = by_file(before), by_file(after)
    fixable_before = collections.Counter(f["code"] for f in before if f.get("fix"))
    changed = [p for p in py_files if p.read_bytes() != originals[p]]
    failures: list[str] = []
    for p in changed:
        old, new = originals[p], p.read_bytes()
        rel = p.relative_to(copy)
        if not libcst_parses(new) or (compiles(old) and not compiles(new)):
            failures.append(f"{rel}: does not parse after the fix")
            continue
        c_old, c_new = comments(old), comments(new)
        if c_old is not None and c_old != c_new:
            lost = (c_old - (c_new or collections.Counter()))
            failures.append(f"{rel}: lost comments {list(lost)[:3]}")
        key = str(p.resolve())
        left = [f for f in after_by.get(key, []) if f.get("fix")]
        if left:
            failures.append(f"{rel}: still fixable after --fix: " + ", ".join(f"{f['code']}@{f['line']}" for f in left[:3]))
        count_before = collections.Counter(f["code"] for f in before_by.get(key, []))
        count_after = collections.Counter(f["code"] for f in after_by.get(key, []))
        more = {c: n for c, n in count_after.items() if n > count_before.get(c, 0)}
        if more:
            failures.append(f"{rel}: the fix created findings {more}")
    failures += [f"{f['path']}:{f['line']}: {f['message']}" for f in internal_errors]

    # fixes applied per rule: findings with a fix before, minus those left after, per code
    after_fixable = collections.Counter(f["code"] for f in after if f.get("fix"))
    after_count = collections.Counter(f["code"] for f in after)
    before_count = collections.Counter(f["code"] for f in before)
    per_rule = {
        code: before_count[code] - after_count.get(code, 0)
        for code in sorted(fixable_before)
    }

    lines = [
        f"- corpus: {len(py_files)} Python files ({args.corpus.name})",
        f"- findings before: {len(before)} ({sum(fixable_before.values())} with a fix, safe or unsafe)",
        f"- files changed: {len(changed)}",
        f"- fixes applied: {applied}",
        f"- findings after: {len(after)} ({sum(after_fixable.values())} still with a fix)",
        "- fixed findings per rule: " + (", ".join(f"{c} {n}" for c, n in per_rule.items() if n) or "none"),
        f"- failures (must be 0): {len(failures)}",
        f"- time: lint {t_lint:.1f} s, --fix of the {len(fixable_paths)} files with a fix {t_fix:.1f} s (--jobs {args.jobs})",
    ]
    print("\n".join(lines))
    for f in failures[:50]:
        print("  FAIL", f)
    if args.update_docs:
        doc = args.update_docs.read_text()
        block = (
            f"{START}\n"
            f"Measured with `python benchmarks/fix_corpus.py --jobs {args.jobs}`:\n\n" + "\n".join(lines) + f"\n{END}"
        )
        if START in doc and END in doc:
            doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
        args.update_docs.write_text(doc)
    if args.keep:
        print(f"fixed copy kept in {copy}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
