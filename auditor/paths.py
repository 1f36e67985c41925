"""How a file's path is shown: to a person (relative to the working directory, one printable
line) and to tools (relative to a root, as a ``file://`` URI). Shared by the linter's reports and
the runtime's messages; imports nothing of the package."""

from __future__ import annotations

import os
from pathlib import PurePath


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def relative_below(path: str, base: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``base`` when it lies below it, else ``None``. Tries the paths as
    written first, then with symlinks resolved."""
    for p, b in ((_absolute(path), _absolute(base)), (os.path.realpath(path), os.path.realpath(base))):
        try:
            rel = os.path.relpath(p, b)
        except ValueError:  # another drive on Windows
            continue
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep) and not os.path.isabs(rel):
            return rel
    return None


def display_path(path: str) -> str:
    """The path as shown to a person: relative to the current directory when below it,
    otherwise as given; :func:`printable`."""
    if not path:
        return path
    rel = relative_below(path, os.getcwd())
    return printable(rel if rel is not None else path)


def printable(name: str) -> str:
    """A file name as one line of valid text. A name is bytes on Linux: one that is not valid
    UTF-8 (held as lone surrogates) or holds a newline or another control character is shown
    quoted, with Python's escapes (``"bad\\xff.py"``, ``"new\\nline.py"``), so that it can
    neither break the output's encoding nor forge a line that reads as another finding."""
    if name.isprintable() and '"' not in name[:1]:
        return name
    raw = os.fsencode(name).decode("utf-8", "backslashreplace")  # undecodable bytes: \xff
    out = []
    for ch in raw:
        if ch == '"':
            out.append('\\"')
        elif not ch.isprintable():
            code = ord(ch)
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def repo_relative_posix(path: str, root: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root`` with forward slashes, or ``None`` when outside ``root``."""
    rel = relative_below(path, root)
    if rel is None:
        return None
    return PurePath(rel).as_posix()


def absolute_uri(path: str) -> str:
    from urllib.parse import quote

    # from the name's bytes: an undecodable byte becomes %FF (Path.as_uri() raises on it)
    return "file://" + quote(os.fsencode(PurePath(_absolute(path)).as_posix()), safe="/")
