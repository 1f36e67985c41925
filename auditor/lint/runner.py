"""Lint many files: read, look up the cache, spread the misses over worker processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from torch_audit.lint.engine import FileResult, LintSettings, lint_source, mentions_trigger

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.cache import Cache

#: Below this many files to parse, starting worker processes costs more than it saves.
MIN_FILES_FOR_WORKERS = 8
_CHUNK = 4

_worker_settings: LintSettings | None = None


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(settings: LintSettings) -> None:
    global _worker_settings
    _worker_settings = settings
    # Ctrl-C is handled by the parent, which shuts the pool down.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _lint_chunk(items: list[tuple[str, bytes]]) -> list[FileResult]:
    assert _worker_settings is not None
    return [lint_source(path, data, _worker_settings) for path, data in items]


def _context():
    # multiprocessing and concurrent.futures are imported only when a pool is started: they cost
    # ~15 ms of start-up that linting a few files does not need.
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    # fork is by far the cheapest start on Linux; the parent holds no threads at this point.
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


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
    """Lint ``files``; returns their results (in input order) and I/O warnings."""
    results: dict[int, FileResult] = {}
    warnings: list[str] = []
    todo: list[tuple[int, str, bytes, str | None]] = []
    triggers = settings.triggers
    for i, path in enumerate(files):
        name = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            warnings.append(f"{name}: cannot read: {exc.strerror or exc}")
            continue
        if len(data) <= settings.max_file_bytes and not mentions_trigger(data, triggers):
            results[i] = FileResult(name, skipped=True)
            continue
        key = cache.key(data) if cache is not None else None
        if cache is not None and key is not None:
            hit = cache.get(key)
            cached = _from_cache(name, hit) if hit is not None else None
            if cached is not None:
                results[i] = cached
                continue
        todo.append((i, name, data, key))

    done = len(results)
    if on_progress:
        on_progress(done)

    def store(index: int, key: str | None, result: FileResult) -> None:
        nonlocal done
        results[index] = result
        if cache is not None and key is not None and result.internal_errors == 0:
            cache.put(key, result.to_cache())
        done += 1
        if on_progress:
            on_progress(done)

    if jobs <= 1 or len(todo) < MIN_FILES_FOR_WORKERS:
        for index, name, data, key in todo:
            store(index, key, lint_source(name, data, settings))
    else:
        # Big files first, so that no worker is left with a giant at the end.
        todo.sort(key=lambda item: -len(item[2]))
        chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=_context(), initializer=_init_worker, initargs=(settings,)
        ) as pool:
            futures = [
                (chunk, pool.submit(_lint_chunk, [(name, data) for _, name, data, _ in chunk]))
                for chunk in chunks
            ]
            for chunk, future in futures:
                for (index, _, _, key), result in zip(chunk, future.result()):
                    store(index, key, result)
    return [results[i] for i in sorted(results)], warnings


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
