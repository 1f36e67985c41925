"""The whole-program model: the files being linted, the local modules they import, linked.

:func:`build_project` summarises every file named for linting (and, transitively, the project
modules they import, which are read and summarised but never reported on) and returns a
:class:`~torch_audit.lint.project.model.Project` that the facts of each file consult when a
question crosses a function or a file. Summaries are cached by content hash beside the lint
results, so a warm run reads them instead of parsing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from torch_audit.lint.project.layout import Layout
from torch_audit.lint.project.model import Evidence, Project
from torch_audit.lint.project.summary import FORMAT, summarize_source

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.cache import Cache

__all__ = ["Evidence", "Project", "build_project", "summary_digest"]

#: at most this many files that are imported but not linted are read (a bound on the closure)
MAX_IMPORTED_FILES = 2000
#: files larger than this are not summarised (generated code)
MAX_SUMMARY_BYTES = 2 * 1024 * 1024


def summary_digest(summary: dict | None) -> str:
    """A short, stable hash of a summary (what dependents' cached findings are keyed by)."""
    import hashlib
    import json

    text = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


class _SummaryStore:
    """Summaries by content hash: in memory, and in the lint cache when there is one."""

    def __init__(self, cache: "Cache | None", max_bytes: int) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.by_path: dict[Path, dict | None] = {}
        self.digests: dict[Path, str] = {}

    def load(self, path: Path) -> dict | None:
        if path in self.by_path:
            return self.by_path[path]
        summary = self._load(path)
        self.by_path[path] = summary
        return summary

    def _load(self, path: Path) -> dict | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        import stat as stat_module

        if not stat_module.S_ISREG(st.st_mode) or st.st_size > self.max_bytes:
            return None
        try:
            with open(path, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError:
            return None
        return self.from_bytes(path, data)

    def from_bytes(self, path: Path, data: bytes) -> dict | None:
        key = None
        if self.cache is not None:
            from torch_audit.lint.cache import content_hash

            # by content alone: a summary never depends on the file's path or on other files
            key = f"s{FORMAT}-" + content_hash(data)
            hit = self.cache.get(key)
            if hit is not None:
                summary = hit.get("summary")
                if isinstance(summary, dict) and summary.get("format") == FORMAT:
                    self.by_path[path] = summary
                    return summary
        summary = summarize_source(data)
        if self.cache is not None and key is not None and summary is not None:
            self.cache.put(key, {"findings": [], "summary": summary})
        self.by_path[path] = summary
        return summary


def build_project(
    files: Iterable[Path],
    *,
    cache: "Cache | None" = None,
    contents: dict[Path, bytes] | None = None,
    max_bytes: int = MAX_SUMMARY_BYTES,
) -> Project:
    """Summarise ``files`` (Python sources; notebooks are linked by their own path) and the
    project modules they import, and link them."""
    paths = [Path(os.path.abspath(f)) for f in files]
    layout = Layout([p for p in paths if p.suffix in (".py", ".pyi", ".ipynb")])
    store = _SummaryStore(cache, max_bytes)
    for path, data in (contents or {}).items():
        store.from_bytes(Path(os.path.abspath(path)), data)
    cwd = os.getcwd()

    def display(path: Path) -> str:
        try:
            return os.path.relpath(path, cwd) if str(path).startswith(cwd) else str(path)
        except ValueError:  # pragma: no cover - another drive on Windows
            return str(path)

    project = Project(layout, store.load, display)
    queue: list[str] = []
    for path in paths:
        if path.suffix in (".py", ".pyi"):
            queue.append(project.add_file(path))
    # the local modules they import, transitively (read and summarised, never reported on)
    seen = set(queue)
    extra = 0
    while queue and extra < MAX_IMPORTED_FILES:
        key = queue.pop()
        summary = project.summary(key)
        if summary is None:
            continue
        for target in [*summary["imports"].values(), *summary["stars"]]:
            absolute = project.absolute(key, target)
            if absolute is None:
                continue
            parts = absolute.split(".")
            for i in range(len(parts), 0, -1):
                found = project.find(".".join(parts[:i]), key)
                if found is None:
                    continue
                if found not in seen:
                    seen.add(found)
                    queue.append(found)
                    project.summary(found)
                    extra += 1
                break
    project.freeze()
    return project
