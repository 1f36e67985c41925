"""Where the project's modules live: module names of files and files of module names.

Resolution follows Python's own rules, without importing anything: a file's module name is its
path below the first directory (walking up) that is not a package (has no ``__init__.py``); a
dotted name is looked for below the project's roots: the package roots of the linted files, the
directory of the nearest ``pyproject.toml`` and its ``src/``, setuptools' ``package-dir`` mapping,
and, for a script outside any package, the script's own directory (``python train.py`` puts it
first on ``sys.path``). A name found under two roots as two different files is ambiguous and
stays unknown, as does every name not found at all (third-party code).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


class Layout:
    def __init__(self, files: list[Path]) -> None:
        self.roots: list[Path] = []
        seen: set[Path] = set()
        for f in files:
            root = package_root(f.parent)
            if root not in seen:
                seen.add(root)
                self.roots.append(root)
        #: setuptools' package-dir: a package name → its directory (``torch_audit`` → ``auditor``)
        self.aliases: dict[str, Path] = {}
        for extra in self._configured_roots(files):
            if isinstance(extra, tuple):
                self.aliases.setdefault(extra[0], extra[1])
            elif extra not in seen:
                seen.add(extra)
                self.roots.append(extra)
        #: (module name, importing root) → file, for the names looked up so far
        self._found: dict[tuple[str, Path | None], Path | None] = {}

    @staticmethod
    def _configured_roots(files: list[Path]) -> list:
        out: list = []
        pyprojects: set[Path] = set()
        for f in files[:200]:  # the nearest pyproject.toml of a sample of the files
            for d in f.parents:
                candidate = d / "pyproject.toml"
                if candidate.is_file():
                    pyprojects.add(d)
                    break
        for d in sorted(pyprojects):
            out.append(d)
            if (d / "src").is_dir():
                out.append(d / "src")
            out.extend(_package_dirs(d / "pyproject.toml"))
        return out

    def module_name(self, path: Path) -> str | None:
        """The dotted module name of a file (``pkg.sub.mod``, ``pkg`` for its ``__init__.py``)."""
        path = _absolute(path)
        if path.suffix not in (".py", ".pyi"):
            return None
        parts: list[str] | None = None
        for package, directory in self.aliases.items():
            if directory in path.parents:
                parts = [package, *path.relative_to(directory).with_suffix("").parts]
                break
        if parts is None:
            root = package_root(path.parent)
            parts = list(path.relative_to(root).with_suffix("").parts)
        if parts and parts[-1] == "__init__":
            parts.pop()
        if not parts or not all(p.isidentifier() for p in parts):
            return None
        return ".".join(parts)

    def find(self, module: str, near: Path | None = None) -> Path | None:
        """The file of a module name, or None (not in the project, or ambiguous)."""
        key = (module, near)
        if key in self._found:
            return self._found[key]
        head = module.partition(".")[0]
        if head not in self.aliases and not any(head in _top_names(r) for r in (near, *self.roots) if r is not None):
            # `torch.nn.functional`, `numpy`: no root has such a top-level module (the common
            # case, answered without building a path)
            self._found[key] = None
            return None
        rel = Path(*module.split("."))
        if near is not None:
            # the importing file's own root comes first on sys.path (a script's directory, or
            # the directory holding its top-level package): a hit there wins
            for candidate in (near / rel.with_suffix(".py"), near / rel / "__init__.py"):
                if _is_file(candidate):
                    self._found[key] = _absolute(candidate)
                    return self._found[key]
        roots = [r for r in self.roots if r != near]
        hits: set[Path] = set()
        head, _, rest = module.partition(".")
        if head in self.aliases:
            base = self.aliases[head]
            inner = Path(*rest.split(".")) if rest else None
            for candidate in (
                (base / inner).with_suffix(".py") if inner else None,
                (base / inner / "__init__.py") if inner else base / "__init__.py",
            ):
                if candidate is not None and _is_file(candidate):
                    hits.add(_absolute(candidate))
                    break
        for root in roots:
            for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
                if _is_file(candidate):
                    hits.add(_absolute(candidate))
                    break
        found = next(iter(hits)) if len(hits) == 1 else None
        self._found[key] = found
        return found


@functools.lru_cache(maxsize=4096)
def package_root(directory: Path) -> Path:
    """The first directory, from ``directory`` up, that is not a regular package."""
    d = _absolute(directory)
    while (d / "__init__.py").is_file() and d.parent != d:
        d = d.parent
    return d


@functools.lru_cache(maxsize=4096)
def _top_names(root: Path) -> frozenset[str]:
    """The top-level module and package names a root directory offers."""
    try:
        entries = os.listdir(root)
    except OSError:
        return frozenset()
    return frozenset(e[:-3] if e.endswith(".py") else e[:-4] if e.endswith(".pyi") else e for e in entries)


@functools.lru_cache(maxsize=65536)
def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _package_dirs(pyproject: Path) -> list:
    """setuptools' ``package-dir``: roots (``{"" = "lib"}``) and (package, directory) pairs
    (``{pkg = "src/pkg"}``)."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if "package-dir" not in text:
        return []
    from torch_audit.tomlcompat import toml_parser

    tomllib = toml_parser()
    try:
        data = tomllib.loads(text)
    except Exception:
        return []
    mapping = data.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    out = []
    if isinstance(mapping, dict):
        for package, directory in mapping.items():
            if not isinstance(directory, str) or not isinstance(package, str):
                continue
            target = _absolute(pyproject.parent / directory)
            if package == "":
                out.append(target)  # {"" = "lib"}: lib/ is a root
            elif "." not in package:
                out.append((package, target))  # {pkg = "src/pkg"}: the package lives there
    return out
