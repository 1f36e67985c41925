"""Find the Python files to lint: recursive, ``.gitignore``-aware, with default excludes.

A file named on the command line is linted even when an exclude pattern matches it, unless
``force_exclude`` (``--force-exclude``, for pre-commit, which names every file). Broken symlinks, symlink loops and unreadable
directories produce a one-line warning, never a traceback or a hang.
"""

from __future__ import annotations

import dataclasses
import os
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
    "build",
    "dist",
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


class PathNotFound(Exception):
    pass


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


def _gitignore(directory: Path) -> "pathspec.PathSpec | None":
    path = directory / ".gitignore"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return _spec(lines) if lines else None


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
    patterns = [*exclude, *extend_exclude]
    exclude_spec: list[pathspec.PathSpec] = []  # built by the first directory walk
    root = (root or Path.cwd()).resolve()
    files: list[Path] = []
    warnings: list[str] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def excluded(path: Path, resolved: Path, is_dir: bool) -> bool:
        if not exclude_spec:
            exclude_spec.append(_spec(patterns))
        spec = exclude_spec[0]
        try:
            rel = resolved.relative_to(root).as_posix()
        except ValueError:
            rel = path.name
        return _matches(spec, path.name, is_dir) or _matches(spec, rel, is_dir)

    for raw in paths:
        path = Path(raw)
        if not os.path.lexists(path):
            raise PathNotFound(f"{raw}: no such file or directory")
        if path.is_symlink() and not path.exists():
            warnings.append(f"{raw}: broken symbolic link, skipped")
            continue
        if path.is_file():
            resolved = path.resolve()
            if force_exclude and _excluded_with_parents(path, resolved, root, excluded):
                skipped.append((path, "exclude"))
                continue
            if resolved not in seen:
                seen.add(resolved)
                files.append(path)  # named explicitly: always linted
            continue
        if not path.is_dir():
            warnings.append(f"{raw}: not a regular file or directory, skipped")
            continue
        _walk_dir(path, excluded, respect_gitignore, files, warnings, seen, skipped)
    return Discovery(files, warnings, skipped)


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


def _walk_dir(top, excluded, respect_gitignore, files, warnings, seen, skipped) -> None:
    visited_dirs: set[tuple[int, int]] = set()
    # (directory, its resolved path, [(base directory, gitignore spec), ...] from its parents)
    stack: list[tuple[Path, Path, list[tuple[Path, pathspec.PathSpec]]]] = [(top, top.resolve(), [])]
    while stack:
        directory, real_directory, ignores = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            warnings.append(f"{directory}: {exc.strerror or exc}, skipped")
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited_dirs:
            warnings.append(f"{directory}: symbolic link loop, skipped")
            continue
        visited_dirs.add(key)
        if respect_gitignore:
            spec = _gitignore(directory)
            if spec is not None:
                ignores = [*ignores, (directory, spec)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            warnings.append(f"{directory}: {exc.strerror or exc}, skipped")
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
                warnings.append(f"{Path(entry.path)}: broken symbolic link, skipped")
                continue
            if not is_dir and not entry.name.endswith(SOURCE_SUFFIXES):
                continue
            path = Path(entry.path)
            # Only a symbolic link needs resolving; any other entry's real path is its real
            # directory's plus its name (resolving every entry was most of the walk's time).
            if is_link:
                try:
                    resolved = path.resolve()
                except (OSError, RuntimeError):
                    warnings.append(f"{path}: symbolic link loop, skipped")
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
