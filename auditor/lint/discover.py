"""Find the Python files to lint: recursive, ``.gitignore``-aware, with default excludes.

A file named on the command line is linted even when an exclude pattern matches it, unless
``force_exclude`` (``--force-exclude``, for pre-commit, which names every file). Broken symlinks, symlink loops and unreadable
directories produce a one-line warning, never a traceback or a hang.

A cloned repository decides what is in it, so the walk stays inside it: as in Ruff, a symbolic
link to a directory is not followed (a directory named on the command line is walked, link or
not), and a ``.gitignore`` is read only when it is a regular file of sane size (git does not
follow a linked ``.gitignore`` either; one linked to ``/dev/zero`` or ``/dev/stdin`` would never
end). A pattern git ignores as invalid (a lone ``!``) is ignored the same way.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pathspec

DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".env",
    # Build outputs: at the project root only (a source package called `dist` deeper down is
    # linted); _is_build_output adds the same folders beside a packaging file.
    "/build/",
    "/dist/",
    "__pycache__",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".torch_audit_cache",
    "site-packages",
    "node_modules",
    ".eggs",
    "*.egg-info",
    ".ipynb_checkpoints",
)

SOURCE_SUFFIXES = (".py", ".pyi", ".ipynb")
#: Folders where packaging tools put their output, skipped by default at the project root
#: (``/build/`` and ``/dist/`` above) and beside a packaging file anywhere below it (a monorepo's
#: ``plugins/x/build/``).
BUILD_OUTPUT_DIRS = ("build", "dist")
PACKAGING_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
#: A ``.gitignore`` bigger than this is not read (the largest in CPython's and PyTorch's trees
#: are a few KB).
MAX_GITIGNORE_BYTES = 1024 * 1024


class PathNotFound(Exception):
    pass


class InvalidPattern(PathNotFound):
    """An exclusion pattern from the command line that is not valid .gitignore syntax (reported
    as a usage error, as a missing path is)."""


def invalid_pattern(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid .gitignore pattern (pathspec refuses it), or None."""
    import pathspec

    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:  # GitIgnorePatternError, or anything else pathspec raises
        return str(exc) or type(exc).__name__
    return None


@dataclasses.dataclass
class Discovery:
    files: list[Path]
    warnings: list[str]
    #: what an exclude pattern or a .gitignore kept out: (path, "exclude" or the .gitignore's path);
    #: a skipped directory is one entry, its contents are never listed
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def _spec(patterns: Iterable[str]) -> "pathspec.PathSpec":
    # pathspec is imported on first use: linting files named on the command line walks no
    # directory and never needs it (it costs ~20 ms of start-up).
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(list(patterns))


def shown(path: "str | os.PathLike[str]") -> str:
    """A path in a one-line message: as is, or quoted with escapes when it holds a newline, a
    control character or bytes that are not UTF-8 (a name must not forge a line of its own)."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    from torch_audit.paths import printable

    return printable(text)


def _anchored(pattern: str) -> bool:
    """A pattern with a slash before its end matches relative to the root only (.gitignore
    rules), never against a bare file or folder name (``/build/`` is not ``a/build``)."""
    return "/" in pattern.rstrip("/")


def _gitignore(directory: Path, warnings: list[str]) -> "pathspec.PathSpec | None":
    path = directory / ".gitignore"
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None  # none, a link (not followed, as git does), or unreadable
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > MAX_GITIGNORE_BYTES:
            warnings.append(f"{shown(path)}: too large ({st.st_size / 2**20:.1f} MB), not read")
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            raw = fh.read(MAX_GITIGNORE_BYTES)
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    lines = raw.decode("utf-8", errors="replace").splitlines()
    try:
        return _spec(lines) if lines else None
    except Exception:
        pass
    # git skips a pattern it cannot use (a lone `!`, a trailing backslash) and keeps the rest
    valid = [line for line in lines if invalid_pattern(line) is None]
    return _spec(valid) if valid else None


def _is_build_output(directory: Path) -> bool:
    """A ``build``/``dist`` folder beside a packaging file is a packaging tool's output."""
    return directory.name in BUILD_OUTPUT_DIRS and any(
        os.path.isfile(directory.parent / name) for name in PACKAGING_FILES
    )


def _matches(spec: "pathspec.PathSpec | None", rel: str, is_dir: bool) -> bool:
    if spec is None:
        return False
    return spec.match_file(rel + "/" if is_dir else rel)


def discover(
    paths: list[str],
    *,
    exclude: Iterable[str] = DEFAULT_EXCLUDES,
    extend_exclude: Iterable[str] = (),
    root: Path | None = None,
    respect_gitignore: bool = True,
    force_exclude: bool = False,
) -> Discovery:
    """Files to lint under ``paths``. ``exclude`` replaces the defaults, ``extend_exclude`` adds.

    Exclusion globs use .gitignore syntax and are matched against paths relative to ``root``
    (the project root) and against each file or directory name."""
    root = _real(root or Path.cwd())
    excluded = _exclusion(exclude, extend_exclude, root)
    files: list[Path] = []
    warnings: list[str] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    for raw in paths:
        path = Path(raw)
        if not os.path.lexists(path):
            raise PathNotFound(f"{raw}: no such file or directory")
        if path.is_symlink() and not path.exists():
            warnings.append(f"{shown(raw)}: {_link_problem(path)}, skipped")
            continue
        if path.is_file():
            resolved = _real(path)
            if force_exclude and _excluded_with_parents(path, resolved, root, excluded):
                skipped.append((path, "exclude"))
                continue
            if resolved not in seen:
                seen.add(resolved)
                files.append(path)  # named explicitly: always linted
            continue
        if not path.is_dir():
            warnings.append(f"{shown(raw)}: not a regular file or directory, skipped")
            continue
        _walk_dir(path, excluded, respect_gitignore, files, warnings, seen, skipped)
    return Discovery(files, warnings, skipped)


def path_excluded(
    path: Path, *, exclude: Iterable[str] = DEFAULT_EXCLUDES, extend_exclude: Iterable[str] = (), root: Path | None = None
) -> bool:
    """Whether the walk would skip ``path``: an exclude pattern (or the build-output rule)
    matches it or one of its folders. For a path that is not walked (``--stdin-filename``).
    Raises :class:`InvalidPattern` as :func:`discover` does."""
    root = _real(root or Path.cwd())
    return _excluded_with_parents(path, _real(path), root, _exclusion(exclude, extend_exclude, root))


def _exclusion(exclude: Iterable[str], extend_exclude: Iterable[str], root: Path):
    """``excluded(path, resolved, is_dir)``: the exclusion decision of one walk."""
    exclude, extend_exclude = list(exclude), list(extend_exclude)
    patterns = [*exclude, *extend_exclude]
    for option, values in (("--exclude", exclude), ("--extend-exclude", extend_exclude)):
        for pattern in values:
            problem = invalid_pattern(pattern) if _suspect(pattern) else None
            if problem:
                raise InvalidPattern(f"{option}: invalid pattern {pattern!r}: {problem}")
    # Build outputs beside a packaging file are skipped along with the default build excludes.
    build_outputs = all(f"/{name}/" in patterns for name in BUILD_OUTPUT_DIRS)
    exclude_spec: list[pathspec.PathSpec] = []  # built on first use

    def excluded(path: Path, resolved: Path, is_dir: bool) -> bool:
        if not exclude_spec:
            exclude_spec.append(_spec(patterns))
            exclude_spec.append(_spec(p for p in patterns if not _anchored(p)))
        spec, name_spec = exclude_spec
        if is_dir and build_outputs and _is_build_output(resolved):
            return True
        try:
            rel = resolved.relative_to(root).as_posix()
        except ValueError:  # outside the project: only the unanchored patterns can match
            return _matches(name_spec, path.name, is_dir)
        return _matches(name_spec, path.name, is_dir) or _matches(spec, rel, is_dir)

    return excluded


def _excluded_with_parents(path: Path, resolved: Path, root: Path, excluded) -> bool:
    """Whether an exclude pattern matches a file named explicitly or one of its directories
    (``build/`` excludes ``build/gen/x.py``), as Ruff's ``--force-exclude``."""
    try:
        parts = resolved.relative_to(root).parts
        base = root
    except ValueError:  # outside the project: only the names of the path as given can match
        parts = path.parts
        base = Path()
    for i in range(len(parts)):
        prefix = base.joinpath(*parts[: i + 1])
        if excluded(Path(parts[i]) if base == Path() else prefix, prefix, i < len(parts) - 1):
            return True
    return False


def _suspect(pattern: str) -> bool:
    # Only these can be invalid (pathspec refuses a lone `!` and a trailing backslash); checking
    # only them keeps pathspec out of runs that walk no directory.
    return pattern.lstrip().startswith("!") or pattern.endswith("\\")


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop on the way
        return Path(os.path.abspath(path))


def _link_problem(path: Path) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
    return "broken symbolic link"


def _walk_dir(top, excluded, respect_gitignore, files, warnings, seen, skipped) -> None:
    visited_dirs: set[tuple[int, int]] = set()
    # (directory, its resolved path, [(base directory, gitignore spec), ...] from its parents)
    stack: list[tuple[Path, Path, list[tuple[Path, pathspec.PathSpec]]]] = [(top, _real(top), [])]
    while stack:
        directory, real_directory, ignores = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            warnings.append(f"{shown(directory)}: {exc.strerror or exc}, skipped")
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited_dirs:
            warnings.append(f"{shown(directory)}: symbolic link loop, skipped")
            continue
        visited_dirs.add(key)
        if respect_gitignore:
            spec = _gitignore(directory, warnings)
            if spec is not None:
                ignores = [*ignores, (directory, spec)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            warnings.append(f"{shown(directory)}: {exc.strerror or exc}, skipped")
            continue
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:
                is_dir = is_file = False
            is_link = entry.is_symlink()
            if is_link and not is_dir and not is_file:
                warnings.append(f"{shown(Path(entry.path))}: {_link_problem(Path(entry.path))}, skipped")
                continue
            if is_link and is_dir:
                continue  # not followed (as Ruff): it may lead out of the project, or to `/`
            if not is_dir and not entry.name.endswith(SOURCE_SUFFIXES):
                continue
            path = Path(entry.path)
            # Only a symbolic link needs resolving; any other entry's real path is its real
            # directory's plus its name (resolving every entry was most of the walk's time).
            if is_link:
                try:
                    resolved = path.resolve()
                except (OSError, RuntimeError):
                    warnings.append(f"{shown(path)}: symbolic link loop, skipped")
                    continue
            else:
                resolved = real_directory / entry.name
            if excluded(path, resolved, is_dir):
                skipped.append((path, "exclude"))
                continue
            ignored_by = next(
                (base for base, spec in ignores if _matches(spec, path.relative_to(base).as_posix(), is_dir)),
                None,
            )
            if ignored_by is not None:
                skipped.append((path, str(ignored_by / ".gitignore")))
                continue
            if is_dir:
                subdirs.append((path, resolved, ignores))
            elif is_file:
                if resolved not in seen:
                    seen.add(resolved)
                    files.append(path)
        stack.extend(reversed(subdirs))
