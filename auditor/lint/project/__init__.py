"""The whole-program model: the files being linted, the local modules they import, linked.

:func:`build_project` summarises every file named for linting and returns a
:class:`~torch_audit.lint.project.model.Project` that the facts of each file consult when a
question crosses a function or a file. The project modules those files import are read and
summarised when a question first reaches them (never reported on). Summaries are cached by
content hash beside the lint results, so a warm run reads them instead of parsing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from torch_audit.lint.project.layout import Layout
from torch_audit.lint.project.model import Evidence, Project
from torch_audit.lint.project.summary import FORMAT, summarize, summary_digest

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.cache import Cache

__all__ = ["Evidence", "Project", "build_project", "summary_digest"]

#: files larger than this are not summarised (generated code)
MAX_SUMMARY_BYTES = 2 * 1024 * 1024


class _SummaryStore:
    """Summaries by content hash: in memory, and in the lint cache when there is one."""

    def __init__(self, cache: "Cache | None", max_bytes: int, contents: dict[Path, bytes]) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.contents = contents
        self.by_path: dict[Path, dict | None] = {}
        #: the trees of outlined modules, to summarise single definitions when asked
        self.trees: dict[Path, object] = {}

    def load(self, path: Path) -> dict | None:
        """The summary of a file (read from disk unless its bytes were given)."""
        if path not in self.by_path:
            data = self.contents.get(path)
            if data is None:
                data = _read(path, self.max_bytes)
            self.by_path[path] = None if data is None else self.summary_of(path, data)
        return self.by_path[path]

    def load_outline(self, path: Path) -> dict | None:
        """What a module defines (see :func:`summary.outline`): its full summary when it is
        already known, else its outline, from the cache or a parse. The parse is most of the
        cost of an imported module, and a file re-linted after an edit asks for the same
        library modules as the run before."""
        if path in self.by_path:
            return self.by_path[path]
        data = self.contents.get(path)
        if data is None:
            data = _read(path, self.max_bytes)
        if data is None:
            self.by_path[path] = None
            return None
        cached = self.cached(data)
        if cached is not None:
            self.by_path[path] = cached
            return cached
        key = self._key(data, "o")
        if key is not None:
            hit = self.cache.get(key)  # type: ignore[union-attr]
            found = hit.get("outline") if hit is not None else None
            if isinstance(found, dict) and found.get("format") == FORMAT:
                return found
        tree = _parse(data)
        if tree is None:
            return None
        from torch_audit.lint.project.summary import outline

        self.trees[path] = tree
        try:
            found = outline(tree)  # type: ignore[arg-type]
        except RecursionError:
            return None
        if key is not None:
            self.cache.put(key, {"findings": [], "outline": found})  # type: ignore[union-attr]
        return found

    def expand(self, path: Path, name: str) -> dict | None:
        """The full summary of one top-level definition of an outlined module: a question that
        needs ``evaluate()``'s body summarises that function, not the whole module."""
        from torch_audit.lint.project.summary import definition

        tree = self.trees.get(path)
        if tree is None:  # outlined from the cache: parsed now that a body is needed
            data = self.contents.get(path)
            tree = _parse(data if data is not None else _read(path, self.max_bytes) or b"")
            if tree is None:
                return None
            self.trees[path] = tree
        try:
            return definition(tree, name)  # type: ignore[arg-type]
        except RecursionError:
            return None

    def remember_named(self, digest: str, keys: list[str]) -> None:
        """Keep a set of named files in the cache under its digest (once)."""
        if self.cache is not None and self.cache.get(f"N{FORMAT}-{digest}") is None:
            self.cache.put(f"N{FORMAT}-{digest}", {"findings": [], "named": keys})

    def named_files(self, digest: str) -> list[str] | None:
        """The set of named files kept under ``digest``, or None when the cache has not got it."""
        hit = self.cache.get(f"N{FORMAT}-{digest}") if self.cache is not None else None
        keys = hit.get("named") if hit is not None else None
        return keys if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else None

    def content_digest(self, path: Path) -> str:
        from torch_audit.lint.cache import content_hash

        data = self.contents.get(path)
        if data is None:
            data = _read(path, self.max_bytes) or b""
        return content_hash(data)

    def _key(self, data: bytes, kind: str = "s") -> str | None:
        """The cache key of a file's summary (``s``) or outline (``o``)."""
        if self.cache is None:
            return None
        from torch_audit.lint.cache import content_hash

        # by content alone: a summary never depends on the file's path or on other files
        return f"{kind}{FORMAT}-" + content_hash(data)

    def cached(self, data: bytes) -> dict | None:
        key = self._key(data)
        if key is None:
            return None
        hit = self.cache.get(key)  # type: ignore[union-attr]
        summary = hit.get("summary") if hit is not None else None
        return summary if isinstance(summary, dict) and summary.get("format") == FORMAT else None

    def store(self, data: bytes, summary: dict | None) -> None:
        key = self._key(data)
        if key is not None and summary is not None:
            self.cache.put(key, {"findings": [], "summary": summary})  # type: ignore[union-attr]

    def summary_of(self, path: Path, data: bytes) -> dict | None:
        summary = self.cached(data)
        if summary is None:
            summary, _ok = summarize_file(str(path), data, check=False)  # read, never linted
            self.store(data, summary)
        return summary


def _read(path: Path, max_bytes: int) -> bytes | None:
    """A file's bytes when it is a regular file within the size limit (never a FIFO or device)."""
    import stat as stat_module

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat_module.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= max_bytes else None


def summarize_file(path: str, data: bytes, check: bool = True) -> tuple[dict | None, int | None]:
    """The summary of a file's bytes, and (with ``check``, for a file that will be linted) the
    hash of its decoded source when CPython compiled it without a problem the engine would
    report, so that the engine need not compile it again."""
    from torch_audit.lint.engine import cpython_parse, decode

    try:
        source, _ = decode(data)
    except ValueError:
        return None, None
    try:
        if check:
            tree, problem = cpython_parse(source, path)
        else:
            import ast
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree, problem = ast.parse(source), None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, None
    if tree is None:
        return None, None
    try:
        return summarize(tree), (hash(source) if problem is None and check else None)
    except RecursionError:
        return None, None


def _parse(data: bytes):
    import ast
    import warnings

    from torch_audit.lint.engine import decode

    try:
        source, _ = decode(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


#: Below this many files to summarise, a pool costs more than it saves.
_MIN_FILES_FOR_POOL = 16
_pool_items: list[tuple[str, bytes]] = []


def _summarize_task(indices: list[int]) -> list[tuple[dict | None, int | None]]:
    return [summarize_file(*_pool_items[i]) for i in indices]


def _summarize_all(items: list[tuple[str, bytes]], jobs: int) -> list[tuple[dict | None, int | None]]:
    """Summaries of many files, over ``jobs`` forked processes (they inherit the bytes)."""
    global _pool_items
    if jobs <= 1 or len(items) < _MIN_FILES_FOR_POOL:
        return [summarize_file(path, data) for path, data in items]
    from torch_audit.lint.workers import _tasks, worker_pool

    order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))
    _pool_items = [items[i] for i in order]
    out: list = [None] * len(items)
    try:
        with worker_pool(jobs) as pool:  # workers ignore Ctrl-C and die with the parent
            tasks = _tasks([len(d) for _, d in _pool_items])
            for task, results in zip(tasks, pool.map(_summarize_task, tasks)):
                for position, result in zip(task, results):
                    out[order[position]] = result
    finally:
        _pool_items = []
    return out


def build_project(
    files: Iterable[Path],
    *,
    cache: "Cache | None" = None,
    contents: dict[Path, bytes] | None = None,
    max_bytes: int = MAX_SUMMARY_BYTES,
    jobs: int = 1,
    triggers: tuple[bytes, ...] = (b"torch",),
    lint: Iterable[Path] | None = None,
) -> Project:
    """Link ``files`` (the files named for linting) into a project.

    Nothing is summarised that no question needs: a module's summary is read from the cache or
    computed when a question first reaches it (the local modules the files import are outlined
    first, see :mod:`.model`), and callers are looked for only in named files that mention the
    callee's name. The files about to be linted (``lint``; by default every named file that
    mentions one of ``triggers``) are summarised now, over ``jobs`` processes, from the AST the
    engine's syntax check needs: the engine then skips that check."""
    paths = [Path(os.path.abspath(f)) for f in files]
    given = {Path(os.path.abspath(p)): d for p, d in (contents or {}).items()}
    layout = Layout([p for p in paths if p.suffix in (".py", ".pyi", ".ipynb")])
    store = _SummaryStore(cache, max_bytes, given)
    project = Project(layout, store.load, _Display(os.getcwd()), outline=store.load_outline, store=store)
    named: dict[str, bytes] = {}
    for path in paths:
        if path.suffix in (".py", ".pyi"):
            data = given[path] if path in given else _read(path, max_bytes)
            if data is not None:
                given.setdefault(path, data)
                named[project.register(path)] = data
    project.set_named(named)
    if lint is None:
        lint = [p for p in paths if p in given and any(t in given[p] for t in triggers)]
    summarize_for_lint(project, lint, jobs)
    return project


def summarize_for_lint(project: Project, paths: Iterable[Path], jobs: int = 1) -> None:
    """Summarise the files about to be linted (the cache's first, the others over ``jobs``
    processes), marking those CPython compiled cleanly so that the engine skips its check."""
    store = project._store
    misses = []
    for path in (Path(os.path.abspath(p)) for p in paths):
        data = store.contents.get(path)
        if data is None or path in store.by_path:
            continue
        summary = store.cached(data)
        if summary is None:
            misses.append((path, data))
        else:
            store.by_path[path] = summary
    for (path, data), (summary, compiled) in zip(misses, _summarize_all([(str(p), d) for p, d in misses], jobs)):
        store.by_path[path] = summary
        store.store(data, summary)
        if compiled is not None:
            project.mark_compiled(path, compiled)


def project_of(path: str | Path, data: bytes) -> Project | None:
    """The project one source sees (standard input, an editor's unsaved buffer): its own bytes
    as given, the local modules it imports from disk. None for a path that is not Python."""
    path = Path(os.path.abspath(path))
    if path.suffix not in (".py", ".pyi", ".ipynb"):
        return None
    return build_project([path], contents={path: data} if path.suffix != ".ipynb" else None)


class _Display:
    """How messages name a file: relative to the working directory when below it."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd

    def __call__(self, path: Path) -> str:
        text = str(path)
        if text.startswith(self.cwd + os.sep):
            return os.path.relpath(text, self.cwd)
        return text
