"""Lint many files: read, look up the cache, spread the misses over worker processes."""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from torch_audit.lint.discover import shown
from torch_audit.lint.engine import FileResult, LintSettings, mentions_trigger
from torch_audit.lint.sources import lint_source
from torch_audit.lint.workers import _SigtermRaises, Terminated, _tasks, worker_pool
# the project model and tests still import these from here
from torch_audit.lint.workers import _TASK_BYTES, _TASK_MAX_FILES, default_jobs  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.cache import Cache

#: Below this many files to parse, starting worker processes costs more than it saves.
MIN_FILES_FOR_WORKERS = 8
# Set in each worker by _init_worker. Under fork (Linux) the arguments are inherited, not
# pickled: the parent's file contents reach the workers without being copied through a pipe,
# and a task is a list of indices into _worker_sources.
_worker_settings: LintSettings | None = None
_worker_sources: list[tuple[str, bytes, str | None]] = []
_worker_cache: Cache | None = None


def _init_worker(
    settings: LintSettings, sources: list[tuple[str, bytes, str | None]], cache: Cache | None
) -> None:
    global _worker_settings, _worker_sources, _worker_cache
    _worker_settings, _worker_sources, _worker_cache = settings, sources, cache


def _lint_task(indices: list[int]) -> list[FileResult]:
    assert _worker_settings is not None
    out = []
    for i in indices:
        name, data, key = _worker_sources[i]
        result = lint_source(name, data, _worker_settings)
        _cache_result(_worker_cache, key, result)  # in the worker: cache writes run in parallel
        out.append(result)
    return out


def _cache_result(cache: Cache | None, key: str | None, result: FileResult) -> None:
    if cache is not None and key is not None and result.internal_errors == 0:
        cache.put(key, result.to_cache())


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class _NotRegular(Exception):
    pass


def _size_limit(name: str, settings: LintSettings) -> tuple[int, str]:
    """The size over which a file is skipped unread, and how its note names that limit (the
    engine's own notes, word for word)."""
    if name.lower().endswith(".ipynb"):
        from torch_audit.lint.notebook import MAX_NOTEBOOK_BYTES

        return MAX_NOTEBOOK_BYTES, "the notebook size limit"
    return settings.max_file_bytes, f"the {settings.max_file_bytes / 2**20:.0f} MB limit"


def _too_big_note(name: str, size: int, settings: LintSettings) -> str:
    return f"{name}: skipped, {size / 2**20:.1f} MB is over {_size_limit(name, settings)[1]}"


def _read_source(path: Path, limit: int) -> bytes:
    """A file's bytes, its kind and size checked first: a 4 GB sparse file is skipped by its
    size without being read, and a FIFO or device (swapped in after discovery) is never opened
    for a read that would block or never end."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular()
        if st.st_size > limit:
            raise _TooBig(st.st_size)
        chunks = []
        left = limit + 1  # the file may have grown since fstat
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise _TooBig(len(data))
    return data


def _from_cache(path: str, entry: dict) -> FileResult | None:
    """A cached result, or None when the entry parses as JSON but is not one of ours (a
    corrupted or foreign file): it is then treated as a miss and rewritten."""
    try:
        result = FileResult.from_cache(path, entry)
        for f in result.findings:
            positions = (f.line, f.column, f.end_line, f.end_column)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in positions):
                return None
            if not all(isinstance(v, str) for v in (f.code, f.name, f.message)):
                return None
        if not all(isinstance(n, str) for n in result.notes):
            return None
    except Exception:
        return None
    return result


def lint_files(
    files: Iterable[Path],
    settings: LintSettings,
    *,
    jobs: int = 1,
    cache: Cache | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[FileResult], list[str]]:
    """Lint ``files``; returns their results (in input order) and I/O warnings.

    SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) meanwhile."""
    with _SigtermRaises():
        return _lint_files(files, settings, jobs=jobs, cache=cache, on_progress=on_progress)


@dataclasses.dataclass
class _Read:
    """The files read, before linting: results already known (skipped, too big, cache hits),
    what is left to lint, and what the whole-program model is built from."""

    results: dict[int, FileResult] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: (index, path, bytes, cache key) to lint
    todo: list[tuple[int, str, bytes, str | None]] = dataclasses.field(default_factory=list)
    #: every Python source read: the whole-program model is built from them
    python_sources: dict[Path, bytes] = dataclasses.field(default_factory=dict)
    notebooks: list[Path] = dataclasses.field(default_factory=list)
    #: cache hits whose analysis read other files' summaries: valid while those are unchanged
    dependent_hits: dict[int, tuple[str, bytes, str | None]] = dataclasses.field(default_factory=dict)


def _lint_files(
    files: Iterable[Path],
    settings: LintSettings,
    *,
    jobs: int,
    cache: Cache | None,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[FileResult], list[str]]:
    warnings: list[str] = []
    if cache is not None:
        refused = cache.check()
        if refused:
            warnings.append(refused)
            cache = None
    read = _read_files(files, settings, cache)
    read.warnings[:0] = warnings
    _link_project(read, settings, cache, jobs)
    results, todo = read.results, read.todo
    done = len(results)
    if on_progress:
        on_progress(done)

    def finished(index: int, result: FileResult) -> None:
        nonlocal done
        results[index] = result
        done += 1
        if on_progress:
            on_progress(done)

    # Everything allocated so far (modules, libcst's classes, the catalogue) lives to the end:
    # frozen, the garbage collector stops walking it again and again (about 7% of the time of
    # a long run), and forked workers do not copy the pages it lives on when they collect.
    already_frozen = gc.get_freeze_count()
    gc.freeze()
    try:
        if jobs <= 1 or len(todo) < MIN_FILES_FOR_WORKERS:
            for index, name, data, key in todo:
                result = lint_source(name, data, settings)
                _cache_result(cache, key, result)
                finished(index, result)
        else:
            _lint_in_pool(todo, settings, jobs, cache, finished)
    finally:
        if not already_frozen:
            gc.unfreeze()
    return [results[i] for i in sorted(results)], read.warnings


def _read_files(files: Iterable[Path], settings: LintSettings, cache: Cache | None) -> _Read:
    """Read, prefilter and look up every file in the cache."""
    read = _Read()
    results = read.results
    triggers = settings.triggers
    for i, path in enumerate(files):
        name = str(path)
        try:
            data = _read_source(path, _size_limit(name, settings)[0])
        except _TooBig as big:
            results[i] = FileResult(name, notes=[_too_big_note(name, big.size, settings)], skipped=True)
            continue
        except _NotRegular:
            read.warnings.append(f"{shown(name)}: not a regular file, skipped")
            continue
        except OSError as exc:
            read.warnings.append(f"{shown(name)}: cannot read: {exc.strerror or exc}")
            continue
        if path.suffix in (".py", ".pyi"):
            read.python_sources[path] = data
        elif path.suffix == ".ipynb":
            read.notebooks.append(path)  # linked like scripts: they see the local modules beside them
        if len(data) <= settings.max_file_bytes and not mentions_trigger(data, triggers):
            results[i] = FileResult(name, skipped=True)
            continue
        key = cache.key(name, data) if cache is not None else None
        if cache is not None and key is not None:
            hit = cache.get(key)
            cached = _from_cache(name, hit) if hit is not None else None
            if cached is not None:
                results[i] = cached
                if cached.deps:
                    read.dependent_hits[i] = (name, data, key)
                continue
        read.todo.append((i, name, data, key))
    return read


def _link_project(read: _Read, settings: LintSettings, cache: Cache | None, jobs: int) -> None:
    """Build the whole-program model, summarise the files to lint, and send the cache hits
    whose dependencies changed back to be linted."""
    if settings.whole_program and settings.project is None and (read.python_sources or read.notebooks):
        from torch_audit.lint.project import build_project

        settings.project = build_project(
            [*read.python_sources, *read.notebooks], cache=cache, contents=read.python_sources, jobs=jobs,
            triggers=settings.triggers,
            lint=(),  # nothing yet: what is linted is known once the cache hits are checked
        )
    if settings.project is None:
        return
    from torch_audit.lint.project import summarize_for_lint

    summarize_for_lint(settings.project, [Path(name) for _, name, _, _ in read.todo], jobs)
    settings.project.note_changed(Path(name) for _, name, _, _ in read.todo)
    stale = []
    for i, (name, data, key) in read.dependent_hits.items():
        if not settings.project.fresh(read.results[i].deps):
            del read.results[i]  # a module it read changed: lint it again
            stale.append((i, name, data, key))
    summarize_for_lint(settings.project, [Path(name) for _, name, _, _ in stale], jobs)
    read.todo.extend(stale)


def _lint_in_pool(
    todo: list[tuple[int, str, bytes, str | None]],
    settings: LintSettings,
    jobs: int,
    cache: Cache | None,
    finished: Callable[[int, FileResult], None],
) -> None:
    from concurrent.futures import as_completed

    # Big files first, so that no worker is left with a giant at the end.
    todo = sorted(todo, key=lambda item: -len(item[2]))
    sources = [(name, data, key) for _, name, data, key in todo]
    pool = worker_pool(jobs, _init_worker, (settings, sources, cache))
    try:
        tasks = {pool.submit(_lint_task, task): task for task in _tasks([len(d) for _, d, _ in sources])}
        for future in as_completed(tasks):
            for position, result in zip(tasks[future], future.result()):
                finished(todo[position][0], result)
    except Terminated:
        # Asked to stop now: the files in progress are not worth waiting for (Ctrl-C, below,
        # lets them finish, which also lets their cache entries be written).
        import multiprocessing

        for worker in multiprocessing.active_children():
            worker.terminate()
        raise
    finally:
        # On an error or Ctrl-C, drop the tasks no worker has started instead of finishing them.
        pool.shutdown(wait=True, cancel_futures=True)


class ProgressBar:
    """A one-line progress bar on a terminal's stderr."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.last = -1

    def __call__(self, done: int) -> None:
        percent = done * 100 // self.total
        if percent == self.last:
            return
        self.last = percent
        width = 30
        filled = width * done // self.total
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} files")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * 60 + "\r")
        self.stream.flush()
