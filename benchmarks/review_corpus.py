"""Fetch the fresh review corpus of issue 16 into an ignored folder (never installed).

    python benchmarks/review_corpus.py [--dest DIR] [--examples-git GIT_DIR]

The corpus is code none of the rules was tuned on: nine PyPI releases, downloaded with
``pip download --no-deps`` (a pure-Python wheel when the release has one, else the sdist) and
unpacked, plus the ``pytorch/examples`` repository when a bare git directory of it is given
(``--examples-git``; the project's maintainers get one with their search tool's fetch).
Nothing is installed and nothing imports the fetched code: it is only read by ``torch-audit lint``.

Idempotent: a package whose folder already exists is not fetched again. When the pinned version
cannot be had, the nearest version pip finds is taken instead, and the summary says so.
Prints one line per package (fetched / already there / substituted / failed) and writes
``DEST/FETCHED.txt`` with the same lines.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# At the top of the checkout, not under benchmarks/: the meta-tests parse every .py file there,
# and this corpus holds syntax newer than the project's oldest Python.
DEFAULT_DEST = ROOT / ".review-corpus"

# (distribution, pinned version) as named in issue 16.
PACKAGES = [
    ("composer", "0.32.1"),
    ("open-clip-torch", "3.3.0"),
    ("mmdet", "3.3.0"),
    ("espnet", "202611"),
    ("lightly", "1.6.0"),
    ("torchgeo", "0.10.1"),
    ("deepchem", "2.8.0"),
    ("asteroid", "0.7.0"),
    ("torchaudio", "2.11.0"),
]


def _pip_download(spec: str, into: Path, binary: bool) -> Path | None:
    """One archive for ``spec`` in ``into``, or None. ``binary``: pure-Python wheel only."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), spec]
    if binary:
        # Newer releases may require a newer Python than this venv's: the files are only read,
        # so the wheel for the newest Python is as good.
        cmd[4:4] = ["--only-binary", ":all:", "--platform", "any", "--python-version", "3.13",
                    "--implementation", "py", "--abi", "none"]
    else:
        # Without building: the sdist is only unpacked, never prepared or installed.
        cmd[4:4] = ["--no-binary", ":all:", "--no-build-isolation"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(p for p in into.iterdir() if p.is_file())
    if proc.returncode == 0 and archives:
        return archives[0]
    # pip may have saved the sdist before failing to read its metadata: that archive is fine.
    sdists = [p for p in archives if p.name.endswith((".tar.gz", ".zip", ".tar.bz2"))]
    return sdists[0] if sdists else None


def _any_wheel(name: str, version: str, into: Path) -> Path | None:
    """A platform wheel (torchaudio has no pure-Python one); only its Python files are used."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary", ":all:",
           "-d", str(into), f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(p for p in into.iterdir() if p.is_file())
    return archives[0] if proc.returncode == 0 and archives else None


def _available_versions(name: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name],
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    return []


def _nearest(wanted: str, versions: list[str]) -> str | None:
    from packaging.version import InvalidVersion, Version

    def key(v: str):
        try:
            return Version(v)
        except InvalidVersion:
            return None

    target = key(wanted)
    parsed = [(key(v), v) for v in versions if key(v) is not None]
    if not parsed or target is None:
        return None
    older = [p for p in parsed if p[0] <= target]
    # The newest release not after the pinned one, else the oldest after it.
    return max(older)[1] if older else min(parsed)[1]


def _unpack(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.endswith(".py"):
                    zf.extract(member, dest)
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".py")]
            tf.extractall(dest, members=members, filter="data")


def _already(name: str, target: Path) -> str:
    marker = target / ".fetched"
    what = marker.read_text().strip() if marker.exists() else "unknown source"
    return f"{name}: already there ({what})"


def fetch_package(name: str, version: str, dest: Path) -> str:
    target = dest / name
    if target.exists():
        return _already(name, target)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        used = version
        archive = (_pip_download(f"{name}=={version}", tmpdir, binary=True)
                   or _pip_download(f"{name}=={version}", tmpdir, binary=False)
                   or _any_wheel(name, version, tmpdir))
        if archive is None:
            used = _nearest(version, _available_versions(name)) or ""
            if used:
                archive = (_pip_download(f"{name}=={used}", tmpdir, binary=True)
                           or _pip_download(f"{name}=={used}", tmpdir, binary=False)
                           or _any_wheel(name, used, tmpdir))
        if archive is None:
            return f"{name}: FAILED (no {version}, no nearest version)"
        staging = dest / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        _unpack(archive, staging)
        note = "" if used == version else f" SUBSTITUTED for {version}"
        (staging / ".fetched").write_text(f"{archive.name}{note}\n")
        staging.rename(target)
        return f"{name}: fetched {archive.name}{note}"


def fetch_examples(git_dir: Path, dest: Path) -> str:
    target = dest / "pytorch-examples"
    if target.exists():
        return _already("pytorch-examples", target)
    head = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        return f"pytorch-examples: FAILED ({git_dir} is not a git directory)"
    staging = dest / ".pytorch-examples.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # Only the Python files: the mirror may lack the blobs of large data files.
    archive = subprocess.Popen(["git", "--git-dir", str(git_dir), "archive", "HEAD", "--", "*.py"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(staging)], stdin=archive.stdout, check=True)
    archive.wait()
    listed = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", "HEAD"],
                            capture_output=True, text=True).stdout.split()
    wanted = sum(1 for name in listed if name.endswith(".py"))
    got = sum(1 for _ in staging.rglob("*.py"))
    if got != wanted:
        return f"pytorch-examples: FAILED ({got} of {wanted} Python files extracted; left in {staging})"
    what = f"commit {head.stdout.strip()} ({got} Python files)"
    (staging / ".fetched").write_text(what + "\n")
    staging.rename(target)
    return f"pytorch-examples: fetched {what}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--examples-git", type=Path, help="bare git dir of pytorch/examples")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, version in PACKAGES:
        line = fetch_package(name, version, args.dest)
        print(line, flush=True)
        lines.append(line)
    if args.examples_git:
        line = fetch_examples(args.examples_git, args.dest)
    else:
        line = "pytorch-examples: skipped (no --examples-git)"
    print(line, flush=True)
    lines.append(line)
    (args.dest / "FETCHED.txt").write_text("\n".join(lines) + "\n")
    return 1 if any("FAILED" in line for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
