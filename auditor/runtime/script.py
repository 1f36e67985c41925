"""Run a script or a module as ``__main__`` exactly as ``python SCRIPT ARGS`` / ``python -m MOD
ARGS`` would, inside the current process.

What the script sees is what plain ``python`` gives it:

- ``sys.argv`` is ``[SCRIPT-as-typed, *ARGS]`` (``python -m``: the module's file, then ARGS);
- ``sys.path[0]`` is the script's folder with symlinks resolved (``-m``: the working directory);
- ``__name__ == "__main__"``, ``__file__`` is the absolute path, ``__spec__`` is ``None`` for a
  script, and ``sys.modules["__main__"]`` is the script's own module (so pickling classes defined
  in it, ``multiprocessing`` with ``spawn``/``forkserver`` and DataLoader workers work);
- the working directory is left alone.

Everything this module changes in :mod:`sys` is restored when the script ends, also when it
raises; exceptions (``SystemExit``, ``KeyboardInterrupt`` included) propagate unchanged. This
module does not import torch.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import os
import runpy
import sys
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = ["ScriptNotFound", "run_script", "run_module", "trim_traceback", "exit_status"]


class ScriptNotFound(Exception):
    """The script file or module does not exist (``python`` would exit 2 / 1)."""


@contextmanager
def _sys_state(argv: list[str], path0: str) -> Iterator[None]:
    saved_argv = sys.argv
    saved_main = sys.modules.get("__main__")
    saved_path = list(sys.path)
    sys.argv = argv
    if sys.path:
        sys.path[0] = path0
    else:  # pragma: no cover - an interpreter started with an empty sys.path
        sys.path.insert(0, path0)
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        # Keep what the script appended to sys.path (python keeps it too), restore entry 0.
        if sys.path and saved_path:
            if sys.path[0] == path0:
                sys.path[0] = saved_path[0]


def run_script(path: str, args: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Execute ``path`` as ``python path *args`` does; returns the script's globals.

    Directories and zip files with a ``__main__.py`` are run through :func:`runpy.run_path`."""
    if not os.path.exists(path):
        raise ScriptNotFound(f"can't open file {os.path.abspath(path)!r}: no such file")
    abspath = os.path.abspath(path)
    folder = os.path.dirname(os.path.realpath(abspath))
    if os.path.isdir(abspath) or not abspath.endswith((".py", ".pyw")) and _is_zip(abspath):
        with _sys_state([path, *args], os.path.realpath(abspath)):
            return runpy.run_path(abspath, run_name="__main__")
    with open(abspath, "rb") as fh:
        source = fh.read()
    code = compile(source, abspath, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=abspath,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", abspath),
        __package__=None,
        __spec__=None,
        __builtins__=builtins,
    )
    with _sys_state([path, *args], folder):
        sys.modules["__main__"] = module
        exec(code, module.__dict__)
    return module.__dict__


def run_module(name: str, args: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Execute module ``name`` as ``python -m name *args`` does; returns its globals."""
    import importlib.util

    with _sys_state(["-m", *args], os.getcwd()):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise ScriptNotFound(f"No module named {name!r} ({exc})") from None
        if spec is None:
            raise ScriptNotFound(f"No module named {name!r}")
        return runpy.run_module(name, run_name="__main__", alter_sys=True)


def _is_zip(path: str) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_RUNPY = {os.path.abspath(runpy.__file__), "<frozen runpy>"}


def _ours(filename: str) -> bool:
    return filename in _RUNPY or os.path.abspath(filename).startswith(_OWN_DIR)


def trim_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Drop the leading frames of torch-audit (and runpy) so that a traceback starts in the
    user's script, as under plain python."""
    while tb is not None and tb.tb_next is not None and _ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def exit_status(exc: SystemExit) -> int:
    """The process exit status ``python`` derives from ``SystemExit`` (printing a message
    argument is the caller's job, see :func:`print_exit_message`)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF  # what the operating system reports, as for python
    return 1


def print_exit_message(exc: SystemExit, stream: Any = None) -> None:
    """``sys.exit("message")`` prints the message to stderr, as python does."""
    code = exc.code
    if code is None or isinstance(code, int):
        return
    print(code, file=stream if stream is not None else sys.stderr)


def report_exception(exc: BaseException, excepthook: Callable | None = None) -> None:
    """Print an uncaught exception the way python would (through ``sys.excepthook``)."""
    hook = excepthook or sys.excepthook
    tb = trim_traceback(exc.__traceback__)
    exc.__traceback__ = tb  # the default hook prints the exception's own traceback
    try:
        hook(type(exc), exc, tb)
    except Exception:  # a broken user excepthook: python falls back to the default one
        sys.__excepthook__(type(exc), exc, tb)
