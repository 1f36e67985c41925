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
    """torch's directory and torch-audit's two (``auditor/`` and ``rules/``, mapped by
    setuptools' package-dir): located through the import system's specs, without importing
    ``torch_audit`` from here (which imports this module lazily: no import cycle)."""
    import importlib.util

    dirs = [os.path.dirname(os.path.abspath(torch.__file__))]
    for name in ("torch_audit", "torch_audit.rules"):
        spec = importlib.util.find_spec(name)
        dirs.extend(os.path.abspath(p) for p in (spec.submodule_search_locations or ()) if spec)
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
    """A path relative to the working directory when it lies below it (as the linter's reports
    show paths: :func:`torch_audit.paths.relative_below`); unquoted, the renderers quote a name
    that is not printable."""
    from torch_audit.paths import relative_below

    rel = relative_below(path, os.getcwd())
    return rel if rel is not None else path


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


# ----------------------------------------------------------------------------------------------
# the user's lines: where an optimizer steps and where it was built
# ----------------------------------------------------------------------------------------------


def is_library_path(path: str) -> bool:
    """Code the user does not edit: torch, torch-audit, installed packages, the standard
    library's runners."""
    if _is_internal(path):
        return True
    full = os.path.abspath(path)
    return f"{os.sep}site-packages{os.sep}" in full or f"{os.sep}dist-packages{os.sep}" in full


def user_location(path: str | None) -> bool:
    """Whether a finding may point at ``path`` as the line to change."""
    return bool(path) and not is_library_path(path)


_MAX_FRAMES = 12  # user frames searched outwards for the variable holding an optimizer


def _names_of(obj: Any, frame: Any) -> list[str]:
    """The names under which ``frame`` holds ``obj``: its locals (module frames: its globals),
    and one level of attributes of ``self``."""
    names = [k for k, v in frame.f_locals.items() if v is obj]
    owner = frame.f_locals.get("self")
    try:
        attrs = vars(owner) if owner is not None else {}
    except TypeError:
        attrs = {}
    names.extend(f"self.{k}" for k, v in attrs.items() if v is obj)
    return names


def _construction_line(path: str, names: list[str], classes: list[str],
                       first: int, last: int) -> int | None:
    """The line of ``path`` that assigns one of ``names`` from a call of one of ``classes``
    (``optimizer = torch.optim.SGD(`` ...), nearest before ``last`` inside the function that
    starts at ``first``, else the last such line of the file; None when no line says so."""
    if not names or not classes:
        return None
    target = "|".join(re.escape(n) for n in names)
    cls = "|".join(re.escape(c) for c in classes)
    pattern = re.compile(rf"^\s*(?:{target})\s*(?::[^=]*)?=(?!=).*\b(?:{cls})\s*\(")
    lines = linecache.getlines(path)
    hits = [i + 1 for i, text in enumerate(lines) if pattern.match(text)]
    inside = [n for n in hits if first <= n <= last]
    if inside:
        return inside[-1]
    return hits[-1] if hits else None


def optimizer_classes(optimizer: Any) -> list[str]:
    """The class names a construction line may call: the optimizer's class and its bases up
    to ``Optimizer`` (a user's subclass of AdamW is built by its own name)."""
    out = []
    for klass in type(optimizer).__mro__:
        if klass.__name__ in ("Optimizer", "object"):
            break
        out.append(klass.__name__)
    return out


class UserSites:
    """Where the user's code steps each optimizer and where it built it, found once per
    optimizer (at its first ``step()``, by one walk of the stack), kept as plain strings and
    numbers under the optimizer's label: runtime findings point there instead of at a model
    class that may live in ``site-packages``."""

    def __init__(self) -> None:
        self.step_sites: dict[str, tuple[str, int]] = {}
        self.construction_sites: dict[str, tuple[str, int]] = {}

    def note_step(self, optimizer: Any, label: str, skip: int = 2) -> None:
        if label in self.step_sites:
            return
        try:
            self._walk(optimizer, label, sys._getframe(skip))
        except Exception:  # a location is never worth breaking a training step
            pass

    def _walk(self, optimizer: Any, label: str, frame: Any) -> None:
        classes = optimizer_classes(optimizer)
        seen = 0
        while frame is not None and seen < _MAX_FRAMES:
            path = frame.f_code.co_filename
            if not is_library_path(path):
                seen += 1
                if label not in self.step_sites:
                    self.step_sites[label] = (path, frame.f_lineno)
                line = _construction_line(path, _names_of(optimizer, frame), classes,
                                          frame.f_code.co_firstlineno, frame.f_lineno)
                if line is not None:
                    self.construction_sites[label] = (path, line)
                    return
            frame = frame.f_back

    def step_site(self, label: str) -> tuple[str, int] | None:
        """The user's line that called ``step()`` of this optimizer (the training loop)."""
        return self.step_sites.get(label)

    def construction_site(self, label: str) -> tuple[str, int] | None:
        """The user's line that built this optimizer, else its step line."""
        return self.construction_sites.get(label) or self.step_sites.get(label)


def optimizer_line(session: Any, label: str, where: str = "step",
                   module: Any = None) -> dict[str, Any]:
    """``path``/``line`` keywords for ``RuntimeCheck.report`` that point at the user's line for
    the optimizer ``label``: its ``step()`` call (``where="step"``) or its construction
    (``where="construction"``, else its step line). With ``module``, a module class the user
    wrote wins (nothing is returned: the session points at it). Empty when nothing is known,
    so that the session's own choice stands."""
    if module is not None:
        try:
            loc = session.module_location(module)
        except Exception:
            loc = None
        if loc and user_location(loc[0]):
            return {}
    sites = getattr(session, "user_sites", None)
    if sites is None:
        return {}
    loc = sites.construction_site(label) if where == "construction" else sites.step_site(label)
    return {"path": loc[0], "line": loc[1]} if loc else {}
