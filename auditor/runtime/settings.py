"""How a runtime session's settings combine with ``[tool.torch-audit]``, in one place for
``torch_audit.audit()`` and ``torch-audit run``: the explicit ``select``/``ignore``/
``extend-select`` are a layer over the file's, as the linter's command line is (an explicit
``select`` starts afresh, see :meth:`Catalog.resolve <torch_audit.catalog.Catalog.resolve>`), an
explicit ``preview`` (not None) replaces the file's, and explicit per-check options override the
file's key by key.

Torch-free (the configuration is plain data).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch_audit.catalog import Catalog, Layer
from torch_audit.config import Config, find_config, load_config

__all__ = ["RuntimeSelection", "merge_options", "project_config", "resolve_options",
           "resolve_selection", "runtime_options", "selection"]

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


def resolve_options(catalog: Catalog, options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """Validate per-check options keyed by check name or code; returns ``{code: {key: value}}``.
    Raises ``ValueError`` (an unknown check or key) or ``TypeError`` (a wrongly typed value)."""
    out: dict[str, dict] = {}
    for key, values in (options or {}).items():
        rule = catalog.get(str(key))
        if rule is None or rule.kind != "runtime":
            raise ValueError(f"options given for unknown runtime check {key!r}")
        if not isinstance(values, Mapping):
            raise TypeError(f"options for {key!r} must be a dict, got {type(values).__name__}")
        checked = {}
        for k, v in values.items():
            opt = rule.options.get(k)
            if opt is None:
                valid = ", ".join(sorted(rule.options)) or "none"
                raise ValueError(f"unknown option {k!r} for {rule.name} (valid: {valid})")
            checked[k] = opt.check(rule.name, k, v)
        out.setdefault(rule.code, {}).update(checked)
    return out


@dataclasses.dataclass(frozen=True)
class RuntimeSelection:
    """The runtime checks a session runs and their options, resolved and validated once (by
    :func:`resolve_selection`); ``torch_audit.audit()``, ``torch-audit run`` and the
    integrations hand it to the session, which resolves nothing again."""

    #: the check classes, in catalogue order
    rules: tuple[type, ...]
    #: validated options by check code
    options: Mapping[str, Mapping[str, Any]]
    #: whether runtime-internal-error (TA799) findings are reported (no ignore turned it off)
    report_internal: bool = True

    @property
    def codes(self) -> list[str]:
        return [rule.code for rule in self.rules]


def resolve_selection(catalog: Catalog, *, config: Config | None = None,
                      select: Iterable[str] | None = None, ignore: Iterable[str] = (),
                      extend_select: Iterable[str] = (), preview: bool | None = None,
                      options: Iterable[Mapping[str, Any]] = ()) -> RuntimeSelection:
    """The file's settings (``config``; None: none) with the explicit ones layered over them,
    as the linter layers its command line: ``select`` starts afresh, ``ignore`` and
    ``extend_select`` adjust, ``preview`` replaces the file's unless None, and each mapping of
    ``options`` (keyed by check name or code) overrides the file's options and the mappings
    before it key by key. Raises :class:`~torch_audit.catalog.UnknownSelector`, and
    ``ValueError``/``TypeError`` for a bad option."""
    config = config if config is not None else Config()
    resolved = catalog.resolve(
        [Layer(config.select, config.ignore, config.extend_select),
         Layer(select, ignore, extend_select)],
        preview=config.preview if preview is None else preview, kind="runtime",
    )
    merged: Mapping[str, Any] = runtime_options(config, catalog)
    for layer in options:  # the later wins
        merged = merge_options(merged, layer, catalog)
    return RuntimeSelection(
        rules=tuple(resolved.rules),
        options=resolve_options(catalog, merged),
        report_internal=INTERNAL_ERROR_CODE not in resolved.ignored,
    )
