"""Source locations for runtime findings: where a module's class is defined, and the first
frame of user code on the current stack (skipping torch and torch-audit internals)."""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import re
import sys
from typing import Any

import torch

def _package_dirs() -> tuple[str, ...]:
    import torch_audit
    import torch_audit.rules

    dirs = [os.path.dirname(os.path.abspath(torch.__file__))]
    for pkg in (torch_audit, torch_audit.rules):
        dirs.extend(os.path.abspath(p) for p in pkg.__path__)
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


_INTERNAL_PREFIXES = _package_dirs()
_internal_cache: dict[str, bool] = {}


def _is_internal(filename: str) -> bool:
    hit = _internal_cache.get(filename)
    if hit is None:
        hit = (
            filename.startswith("<")
            or os.path.abspath(filename).startswith(_INTERNAL_PREFIXES)
            or f"{os.sep}importlib{os.sep}" in filename
            or filename.endswith(f"{os.sep}runpy.py")
            or filename.endswith(f"{os.sep}contextlib.py")
        )
        _internal_cache[filename] = hit
    return hit


def user_site(skip: int = 1) -> tuple[str, int] | None:
    """``(path, line)`` of the innermost frame outside torch and torch-audit, or None."""
    frame = sys._getframe(skip)
    while frame is not None:
        code = frame.f_code
        if not _is_internal(code.co_filename):
            return code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


def is_torch_class(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] == "torch"


def _undecorated(fn: Any) -> Any:
    """The function a method's decorators wrap (``functools.wraps`` leaves ``__wrapped__``):
    Hugging Face decorates ``forward``, and the wrapper's code lies in the library's utilities."""
    fn = getattr(fn, "__func__", fn)  # classmethod, staticmethod
    try:
        return inspect.unwrap(fn)
    except Exception:  # a cycle of __wrapped__, an attribute that raises on access
        return fn


@functools.lru_cache(maxsize=1024)
def _class_location(cls: type) -> tuple[str, int] | None:
    # Prefer the code objects of the class's own functions: they name the real file even for
    # classes defined in scripts run with runpy (whose __module__ is a borrowed "__main__").
    for attr in ("forward", "__init__", *vars(cls)):
        code = getattr(_undecorated(vars(cls).get(attr)), "__code__", None)
        if code is None:
            continue
        path, first = code.co_filename, code.co_firstlineno
        pattern = re.compile(rf"^\s*class\s+{re.escape(cls.__name__)}\b")
        for line in range(first, 0, -1):
            if pattern.match(linecache.getline(path, line)):
                return path, line
        return path, first
    try:
        path = inspect.getsourcefile(cls)
        _, line = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return None
    if path is None:
        return None
    return path, line


def class_location(obj: Any) -> tuple[str, int] | None:
    """Where the class of ``obj`` (or ``obj`` itself when it is a class) is defined."""
    cls = obj if isinstance(obj, type) else type(obj)
    try:
        return _class_location(cls)
    except TypeError:  # unhashable metaclass oddities
        return None


def display_path(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@functools.lru_cache(maxsize=256)
def short_path(path: str) -> str:
    """``display_path``, and for installed libraries the path below their ``site-packages``
    (``transformers/models/bert/modeling_bert.py``): what a message needs to name a line."""
    full = os.path.abspath(path)
    for entry in sys.path:
        site = os.path.abspath(entry) if entry else ""
        in_site = os.path.basename(site) in ("site-packages", "dist-packages")
        if in_site and full.startswith(site + os.sep):
            return full[len(site) + 1:]
    return display_path(path)


@functools.lru_cache(maxsize=1024)
def attribute_use_line(cls: type, attr: str) -> tuple[str, int] | None:
    """The first line of ``cls.forward`` that mentions ``self.<attr>``, found in the source, so
    that the hot path never has to walk frames."""
    fn = None
    for klass in cls.__mro__:
        if "forward" in vars(klass):
            fn = _undecorated(vars(klass)["forward"])
            break
    code = getattr(fn, "__code__", None)
    if code is None or is_torch_class(cls):
        return None
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\b")
    for offset, text in enumerate(lines):
        if pattern.search(text):
            return code.co_filename, first + offset
    return None
