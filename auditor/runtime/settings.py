"""How a runtime session's settings combine with ``[tool.torch-audit]``, in one place for
``torch_audit.audit()`` and ``torch-audit run``: the explicit ``select``/``ignore``/
``extend-select`` are a layer over the file's, as the linter's command line is (an explicit
``select`` starts afresh, see :meth:`Catalog.resolve <torch_audit.catalog.Catalog.resolve>`), an
explicit ``preview`` (not None) replaces the file's, and explicit per-check options override the
file's key by key.

Torch-free (the configuration is plain data).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch_audit.catalog import Catalog, Layer
from torch_audit.config import Config, find_config, load_config

__all__ = ["project_config", "selection", "runtime_options", "merge_options"]

#: runtime-internal-error: reported unless an ignore turns it off, even outside the selection
INTERNAL_ERROR_CODE = "TA799"


def project_config(config: str | os.PathLike[str] | bool | None, catalog: Catalog) -> Config:
    """The configuration ``config=`` asks for: None (or True) finds the nearest
    ``pyproject.toml`` with a ``[tool.torch-audit]`` table from the current directory upwards,
    as the linter does; a path loads that file (a ``pyproject.toml`` or a
    ``torch-audit.toml``); False reads none. Raises :class:`torch_audit.config.ConfigError`."""
    if config is False:
        return Config()
    if config is None or config is True:
        return load_config(find_config(Path.cwd()), catalog)
    if isinstance(config, (str, os.PathLike)):
        return load_config(Path(config), catalog)
    raise TypeError(f"config must be a path, None or False, got {type(config).__name__}")


def selection(config: Config, catalog: Catalog, *, select: Iterable[str] | None,
              ignore: Iterable[str] = (), extend_select: Iterable[str] = (),
              preview: bool | None = None) -> dict[str, Any]:
    """The session's ``select``/``ignore``/``preview`` for the file plus the explicit settings,
    resolved here as the linter resolves its command line: the runtime checks chosen, by code
    (``preview`` True because the preview setting is applied already), and ``ignore`` holding
    TA799 if an ignore in effect turns internal errors off. Raises
    :class:`~torch_audit.catalog.UnknownSelector`."""
    resolved = catalog.resolve(
        [Layer(config.select, config.ignore, config.extend_select),
         Layer(select, ignore, extend_select)],
        preview=config.preview if preview is None else preview, kind="runtime",
    )
    internal_off = INTERNAL_ERROR_CODE in resolved.ignored
    return {
        "select": [rule.code for rule in resolved.rules],
        "ignore": [INTERNAL_ERROR_CODE] if internal_off else [],
        "preview": True,
    }


def runtime_options(config: Config, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """The file's ``[tool.torch-audit.options.<check>]`` tables of runtime checks, by check name
    (the options of static rules are the linter's; the file's values are validated already)."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in config.options.items():
        rule = catalog.get(name)
        if rule is not None and rule.kind == "runtime":
            out.setdefault(rule.name, {}).update(values)
    return out


def merge_options(base: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any],
                  catalog: Catalog) -> dict[str, Any]:
    """``extra`` (keyed by check name or code) over ``base`` (keyed by name), key by key.
    Keys that name no check, and values that are no dicts, are passed on as they are, for
    the session's validation to reject with its own message."""
    out: dict[str, Any] = {name: dict(values) for name, values in base.items()}
    for key, values in extra.items():
        rule = catalog.get(str(key))
        name = rule.name if rule is not None else key
        if isinstance(values, Mapping) and isinstance(out.get(name), dict):
            out[name].update(values)
        else:
            out[name] = dict(values) if isinstance(values, Mapping) else values
    return out
