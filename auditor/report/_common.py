"""Helpers shared by the output formats: ordering, paths, severities, rule lookup."""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePath
from typing import Any, Iterable

from torch_audit.findings import Applicability, Finding


def color_wanted(stream: Any) -> bool:
    """ANSI colour for ``stream``: never with ``NO_COLOR``, always with ``FORCE_COLOR`` (any
    non-empty value, https://no-color.org and https://force-color.org), otherwise on a terminal."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in a stable order: by path, position, code, then runtime step and module."""
    return sorted(
        findings,
        key=lambda f: (
            f.path,
            f.cell or 0,
            f.line,
            f.column,
            f.code,
            f.step if f.step is not None else -1,
            f.module or "",
            f.message,
        ),
    )


def is_runtime(finding: Finding) -> bool:
    return finding.module is not None or finding.step is not None


def fix_is_applicable(finding: Finding, unsafe_fixes: bool) -> bool:
    """Whether ``--fix`` would apply this finding's fix (Ruff's rule: safe fixes always,
    unsafe ones only with ``--unsafe-fixes``)."""
    fix = finding.fix
    if fix is None:
        return False
    return fix.applicability == Applicability.SAFE or unsafe_fixes


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _relative_below(path: str, base: str | os.PathLike[str]) -> str | None:
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
    rel = _relative_below(path, os.getcwd())
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


def escape_surrogates_in_json(text: str) -> str:
    """JSON text made by ``json.dumps(..., ensure_ascii=False)`` with any lone surrogate (an
    undecodable byte of a file name) written as its ``\\udcXX`` escape: valid UTF-8 and valid
    JSON, and ``os.fsencode`` of the decoded string gives the name's bytes back. (A surrogate can
    only occur inside a JSON string, where the escape is legal.)"""
    if text.isascii():
        return text
    import re

    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def repo_relative_posix(path: str, root: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root`` with forward slashes, or ``None`` when outside ``root``."""
    rel = _relative_below(path, root)
    if rel is None:
        return None
    return PurePath(rel).as_posix()


def absolute_uri(path: str) -> str:
    from urllib.parse import quote

    # from the name's bytes: an undecodable byte becomes %FF (Path.as_uri() raises on it)
    return "file://" + quote(os.fsencode(PurePath(_absolute(path)).as_posix()), safe="/")


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity; spell them as strings (``"nan"``, ``"inf"``, ``"-inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finding_dict(finding: Finding) -> dict[str, Any]:
    return json_safe(finding.to_dict())


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"

