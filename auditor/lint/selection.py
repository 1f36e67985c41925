"""What a lint run checks: the configuration file found for the paths, the rules the file and the
options select, and the per-file-ignores. Resolved once per run (per document in the language
server), below the drivers that use it (``command``, ``fix_command``, ``stdin``, ``lsp``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch_audit.catalog import Catalog, CatalogError, Layer, UnknownSelector, load_catalog
from torch_audit.config import Config, ConfigError, find_config, load_config
from torch_audit.lint import gc_paused

if TYPE_CHECKING:  # pragma: no cover
    import pathspec

    from torch_audit.lint.options import LintOptions

__all__ = ["Selection", "SelectionError", "relative", "resolve_config", "select", "select_rules"]


class SelectionError(Exception):
    """The configuration or the selectors cannot be used; the message is the error line."""


def resolve_config(paths: list[str] | tuple[str, ...], config_file: Path | None, catalog: Catalog) -> Config:
    path = config_file if config_file is not None else find_config(Path(paths[0]))
    return load_config(path, catalog)


def relative(path: str, root: Path) -> str:
    """``path`` relative to the project ``root`` (posix), or as given when outside it."""
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _per_file_ignores(config: Config, catalog: Catalog) -> list[tuple[pathspec.PathSpec, set[str]]]:
    out: list[tuple[pathspec.PathSpec, set[str]]] = []
    if not config.per_file_ignores:
        return out
    import pathspec  # only with per-file-ignores: it costs ~20 ms of start-up

    for glob, selectors in config.per_file_ignores.items():
        codes: set[str] = set()
        for s in selectors:
            codes |= catalog.match(s)
        out.append((pathspec.GitIgnoreSpec.from_lines([glob]), codes))
    return out


@dataclasses.dataclass
class Selection:
    """The resolved configuration, the static rules to run and the per-file-ignores."""

    config: Config
    catalog: Catalog
    rules: list[Any]
    per_file_ignores: list[tuple[Any, set[str]]] = dataclasses.field(default_factory=list)

    def ignored_for(self, path: str) -> frozenset[str]:
        """The codes per-file-ignores drop for ``path``."""
        if not self.per_file_ignores:
            return frozenset()
        rel = relative(path, self.config.root)
        return frozenset(code for spec, codes in self.per_file_ignores if spec.match_file(rel) for code in codes)


def select_rules(paths: list[str] | tuple[str, ...], options: "LintOptions", catalog: Catalog) -> Selection:
    """The selection for ``paths`` from ``catalog``. Raises ConfigError or UnknownSelector."""
    config = resolve_config(paths, options.config_file, catalog)
    file_layer = Layer(config.select, config.ignore, config.extend_select)
    cli_layer = Layer(
        options.selectors("select") or None,  # an empty --select is no --select
        options.selectors("ignore"),
        options.selectors("extend_select"),
    )
    preview = config.preview if options.preview is None else options.preview
    rules = catalog.resolve([file_layer, cli_layer], preview=preview, kind="static").rules
    return Selection(config, catalog, rules, _per_file_ignores(config, catalog))


def select(paths: list[str] | tuple[str, ...], options: "LintOptions") -> Selection:
    """Load the catalogue and resolve the selection. The static rules are enough to lint; the
    runtime ones are imported only when the configuration or the command line names one of them
    (it saves start-up time). Raises :class:`SelectionError`."""
    problem: Exception | None = None
    for kinds in (("static",), ("static", "runtime")):
        try:
            with gc_paused():  # imports the rule modules
                catalog = load_catalog(kinds)
            return select_rules(paths, options, catalog)
        except CatalogError as exc:
            raise SelectionError(f"broken rule catalogue: {exc}") from None
        except (ConfigError, UnknownSelector) as exc:
            problem = exc
    raise SelectionError(str(problem))
