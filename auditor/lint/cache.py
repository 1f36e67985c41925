"""Result cache in ``.torch_audit_cache/``, safe in a repository nobody here wrote.

One JSON file per key, ``<settings fingerprint>/<key[:2]>/<key>.json``. The key is
:func:`cache_key`: everything that decides a file's findings goes in, nothing else.

Writes are atomic (temporary file + rename), so concurrent runs in the same directory never see
half an entry, and a truncated or garbage entry is ignored and rewritten.

A cloned repository may ship the cache folder itself: ``README`` as a symbolic link to a file of
the user's, the folder as a link, a settings folder pointing out of the tree. So the cache never
follows a link. Every file and folder is opened relative to its parent's descriptor with
``O_NOFOLLOW``; a file is written to a fresh temporary name and renamed over the old one, which
replaces a link instead of writing through it; an entry is read only when it is a regular file of
sane size. A cache folder that is a link, or owned by another user, is refused as git refuses an
unsafe repository: one warning, and the run lints without a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterable

CACHE_DIR_NAME = ".torch_audit_cache"
_README = "Cache of torch-audit lint results. Safe to delete.\n"
_GITIGNORE = "*\n"
#: An entry is a few KB; anything far bigger is not ours and is not read.
_MAX_ENTRY_BYTES = 16 * 1024 * 1024

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Descriptor-relative calls with O_NOFOLLOW are what make the cache safe; without them (not
#: POSIX) the cache is not used at all.
_SAFE = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def path_inputs(path: str) -> str:
    """What the analysis may read from a file's path.

    Rules read the path the engine is given (``ctx.path``): detect-anomaly-enabled and
    unscoped-torch-library tell test files by their folders and names, the engine tells
    notebooks by their suffix, and skip notes name the file. Any part of it may matter, so the
    whole path is the input: the same content at ``train.py`` and ``tests/test_train.py`` has two
    entries (a moved file costs one cold lint)."""
    return path


def cache_key(content: str, path: str, fingerprint: str, extra: Iterable[str] = ()) -> str:
    """The cache key of one file: its content hash, its :func:`path_inputs`, the settings
    fingerprint, and any ``extra`` inputs (e.g. hashes of other files' summaries the analysis
    read). Each part is length-prefixed, so no two different input lists share a key."""
    h = hashlib.blake2b(digest_size=20)
    for part in (content, path, fingerprint, *extra):
        raw = os.fsencode(part)  # a path may hold undecodable bytes (surrogate escapes)
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


class Cache:
    def __init__(self, root: Path, fingerprint: str) -> None:
        self.base = root / CACHE_DIR_NAME
        self.fingerprint = fingerprint
        self.dir = self.base / fingerprint
        self._ready = False
        self._usable = _SAFE
        #: the settings folder, opened once (a warm run looks up thousands of entries)
        self._settings_fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens its own descriptor
        return {**self.__dict__, "_settings_fd": None}

    def __del__(self) -> None:
        fd = getattr(self, "_settings_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def key(self, path: str, data: bytes, extra: Iterable[str] = ()) -> str:
        return cache_key(content_hash(data), path_inputs(path), self.fingerprint, extra)

    def check(self) -> str | None:
        """Why this cache folder must not be used (then it is not), or None.

        Called once by the parent before any lookup, so the warning is printed once."""
        if not self._usable:
            return None
        try:
            st = os.lstat(self.base)
        except OSError:
            return None  # missing (created on the first write), or unreachable: only costs speed
        problem = _unsafe(st, self.base)
        if problem:
            self._usable = False
        return problem

    # -- descriptors --------------------------------------------------------------------------

    def _open_base(self, create: bool) -> int:
        if create:
            try:
                os.mkdir(self.base)
            except FileExistsError:
                pass
        fd = os.open(self.base, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        try:
            # Checked again on the open descriptor: the folder may have been swapped for another
            # since check() (a link cannot be opened at all with O_NOFOLLOW).
            if _unsafe(os.fstat(fd), self.base):
                raise PermissionError(f"{self.base}: unsafe cache folder")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_settings_dir(self, create: bool) -> int:
        if self._settings_fd is not None:
            return self._settings_fd
        base = self._open_base(create)
        try:
            if create:
                self._write_markers(base)
            self._settings_fd = _open_subdir(base, self.fingerprint, create)
        finally:
            os.close(base)
        return self._settings_fd

    def _open_entry_dir(self, key: str, create: bool) -> int:
        return _open_subdir(self._open_settings_dir(create), key[:2], create)

    def _write_markers(self, base_fd: int) -> None:
        if self._ready:
            return
        for name, text in ((".gitignore", _GITIGNORE), ("README", _README)):
            try:
                st = os.stat(name, dir_fd=base_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    continue  # already there (a link is replaced below, never written through)
            except FileNotFoundError:
                pass
            _replace(base_fd, name, text.encode())
        self._ready = True

    # -- entries ------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        if not self._usable:
            return None
        try:
            directory = self._open_entry_dir(key, create=False)
        except OSError:
            return None
        try:
            fd = os.open(f"{key}.json", os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=directory)
        except OSError:
            return None
        finally:
            os.close(directory)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ENTRY_BYTES:
                return None
            data = json.loads(os.read(fd, st.st_size + 1))  # one read: a regular file, small
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            return None
        return data

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not self._usable:
            return
        try:
            directory = self._open_entry_dir(key, create=True)
            try:
                _replace(directory, f"{key}.json", json.dumps(value, separators=(",", ":")).encode())
            finally:
                os.close(directory)
        except OSError:
            pass  # a read-only tree, a full disk or a planted link only cost speed


def _unsafe(st: os.stat_result, path: Path) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link; linting without a cache"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and stat.S_ISDIR(st.st_mode) and st.st_uid != geteuid():
        return f"{path} is owned by another user (uid {st.st_uid}); linting without a cache"
    return None


def _open_subdir(parent: int, name: str, create: bool) -> int:
    if create:
        try:
            os.mkdir(name, dir_fd=parent)
        except FileExistsError:
            pass
    return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent)


def _replace(directory: int, name: str, data: bytes) -> None:
    """Write ``name`` in ``directory`` atomically: a new file under a fresh name (O_EXCL, so not
    a planted link), then renamed over ``name``, which replaces whatever is there, a link
    included, without following it."""
    tmp = f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666, dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=directory)
        except OSError:
            pass
        raise
