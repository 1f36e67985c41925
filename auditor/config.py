"""``[tool.torch-audit]`` in ``pyproject.toml``, or a ``torch-audit.toml`` / ``.torch-audit.toml``.

Found from the first linted path upwards, as Ruff finds ``ruff.toml``: in each directory a
``.torch-audit.toml``, then a ``torch-audit.toml`` (their keys are top-level, without a
``[tool.torch-audit]`` table), then a ``pyproject.toml`` that has the table; the nearest wins.
Or given with ``--config``. Every key is validated: an unknown key, an unknown rule code or name, or a
value of the wrong type is a :class:`ConfigError` naming the key and the file.

```toml
[tool.torch-audit]
select = ["ALL"]                 # codes, prefixes (TA1), names, ALL
ignore = ["TA402"]
extend-select = ["tensor-data-attribute"]
preview = false
torch-version = "2.4"           # APIs deprecated after this version are not reported
exclude = ["generated/"]        # replaces the default excludes
extend-exclude = ["legacy/*.py"]
respect-gitignore = true
fail-on = "error"               # torch-audit run: exit 1 at or above this severity
budget = 0.02                   # runtime: the audit's share of a pass before short passes are sampled ("off")

[tool.torch-audit.per-file-ignores]
"tests/*" = ["missing-eval-for-inference"]

[tool.torch-audit.options.exploding-gradient]   # per-rule options, by name or code
factor = 20.0
```
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

from torch_audit.catalog import Catalog, UnknownSelector
from torch_audit.output import fail_level
from torch_audit.runtime.pass_sampling import DEFAULT_BUDGET, parse_budget
from torch_audit.tomlcompat import toml_parser

KEYS = {
    "select",
    "ignore",
    "extend-select",
    "per-file-ignores",
    "exclude",
    "extend-exclude",
    "preview",
    "torch-version",
    "respect-gitignore",
    "force-exclude",
    "fail-on",
    "budget",
    "options",
}
#: The dedicated configuration files, in the order they are looked for in one directory.
CONFIG_FILES = (".torch-audit.toml", "torch-audit.toml")


#: A torch version as ``torch-version`` and ``--torch-version`` take it ("2.4", "2.4.1").
TORCH_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")


def split_selectors(values: "str | tuple[str, ...] | list[str] | None") -> list[str]:
    """Rule selectors as given on a command line or to ``audit()``: each value may hold several,
    comma-separated (``--select TA1,bias-before-norm --select TA402``). Blanks are dropped."""
    if isinstance(values, str):
        values = (values,)
    out: list[str] = []
    for v in values or ():
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


class ConfigError(Exception):
    """A configuration problem, reported as one line with exit code 2."""


@dataclasses.dataclass
class Config:
    path: Path | None = None
    root: Path = dataclasses.field(default_factory=Path.cwd)
    select: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    extend_select: list[str] = dataclasses.field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    exclude: list[str] | None = None
    extend_exclude: list[str] = dataclasses.field(default_factory=list)
    preview: bool = False
    torch_version: str | None = None
    respect_gitignore: bool = True
    force_exclude: bool = False
    fail_on: str = "error"
    #: the runtime audit's cost budget (None: "off", every training pass audited)
    budget: float | None = DEFAULT_BUDGET
    #: per-rule options keyed by rule *name*
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: the keys the file set (``--show-settings`` says where each value came from)
    keys_set: frozenset[str] = frozenset()


def find_config(start: Path) -> Path | None:
    """The nearest configuration from ``start`` up: in each directory a ``.torch-audit.toml``,
    a ``torch-audit.toml`` (whatever it holds), then a ``pyproject.toml`` with a
    ``[tool.torch-audit]`` table."""
    try:
        current = start.resolve()
    except (OSError, RuntimeError):  # a symlink loop named on the command line
        current = Path(os.path.abspath(start))
    if current.is_file() or not current.exists():
        current = current.parent
    for directory in (current, *current.parents):
        for name in CONFIG_FILES:
            if (directory / name).is_file():
                return directory / name
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            tomllib = toml_parser()
            # Unreadable, we cannot tell whether it is ours: one clear error, not a guess.
            raw = _read_config_bytes(candidate)
            try:
                data = tomllib.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, tomllib.TOMLDecodeError):
                # A broken pyproject that is not ours to judge: keep looking only if it is not ours
                text = raw.decode("utf-8", errors="replace")
                if "[tool.torch-audit" in text:
                    return candidate
                continue
            if "torch-audit" in data.get("tool", {}):
                return candidate
    return None


#: A configuration file bigger than this is not read (a pyproject.toml is a few KB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _read_config_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: cannot read: larger than {MAX_CONFIG_BYTES // 2**20} MB")
    return raw


def _invalid_pattern(pattern: str) -> str | None:
    """Why a .gitignore-style glob is invalid (pathspec refuses a lone ``!`` and a trailing
    backslash, which git silently ignores), or None. pathspec is imported only for those."""
    if not (pattern.lstrip().startswith("!") or pattern.endswith("\\")):
        return None
    import pathspec

    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


def load_config(path: Path | None, catalog: Catalog) -> Config:
    if path is None:
        return Config()
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read configuration: {exc}") from None
    tomllib = toml_parser()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("torch-audit", {})
        prefix = "tool.torch-audit"
    else:  # a dedicated torch-audit.toml: top-level keys, as in Ruff's ruff.toml
        table = data
        prefix = ""
        if "tool" in data:
            raise ConfigError(
                f"{where}: tool: unknown key (in {path.name} the keys are top-level, "
                "without a [tool.torch-audit] table)"
            )
    return parse_table(table, catalog, where=where, prefix=prefix, root=path.resolve().parent, path=path)


def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def parse_table(
    table: Any, catalog: Catalog, *, where: str, prefix: str, root: Path, path: Path | None = None
) -> Config:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{prefix}] must be a table")
    cfg = Config(path=path, root=root, keys_set=frozenset(table))

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: {_key(prefix, key)}: {problem}")

    def str_list(key: str) -> list[str]:
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, "expected a list of strings")
        return value

    def globs(key: str) -> list[str]:
        values = str_list(key)
        for v in values:
            problem = _invalid_pattern(v)
            if problem:
                raise fail(key, f"invalid pattern {v!r}: {problem}")
        return values

    def selectors(key: str) -> list[str]:
        values = str_list(key)
        for v in values:
            try:
                catalog.match(v)
            except UnknownSelector as exc:
                raise fail(key, str(exc)) from None
        return values

    for key in table:
        if key not in KEYS:
            hint = _did_you_mean(key, KEYS)
            raise fail(key, f"unknown key{hint}")
    if "select" in table:
        cfg.select = selectors("select")
    if "ignore" in table:
        cfg.ignore = selectors("ignore")
    if "extend-select" in table:
        cfg.extend_select = selectors("extend-select")
    if "exclude" in table:
        cfg.exclude = globs("exclude")
    if "extend-exclude" in table:
        cfg.extend_exclude = globs("extend-exclude")
    _parse_scalars(table, cfg, fail)
    if "per-file-ignores" in table:
        cfg.per_file_ignores = _parse_per_file_ignores(table["per-file-ignores"], catalog, fail)
    if "options" in table:
        cfg.options = parse_options(table["options"], catalog, fail)
    return cfg


def _parse_scalars(table: dict[str, Any], cfg: Config, fail) -> None:
    """The true/false keys, ``torch-version``, ``fail-on`` and ``budget``, into ``cfg``."""
    for key, attr in (
        ("preview", "preview"),
        ("respect-gitignore", "respect_gitignore"),
        ("force-exclude", "force_exclude"),
    ):
        if key in table:
            if not isinstance(table[key], bool):
                raise fail(key, "expected true or false")
            setattr(cfg, attr, table[key])
    if "torch-version" in table:
        value = table["torch-version"]
        if not isinstance(value, str) or not (value == "latest" or TORCH_VERSION.fullmatch(value)):
            raise fail("torch-version", 'expected a version string like "2.4" or "latest"')
        cfg.torch_version = None if value == "latest" else value
    if "fail-on" in table:
        try:
            cfg.fail_on = fail_level(table["fail-on"]).value
        except ValueError as exc:
            raise fail("fail-on", str(exc)) from None
    if "budget" in table:
        try:
            cfg.budget = parse_budget(table["budget"])
        except ValueError as exc:
            raise fail("budget", str(exc)) from None


def _parse_per_file_ignores(pfi: Any, catalog: Catalog, fail) -> dict[str, list[str]]:
    """``per-file-ignores``: glob = [codes], each glob a valid pattern, each code a selector."""
    if not isinstance(pfi, dict):
        raise fail("per-file-ignores", "expected a table of glob = [codes]")
    out: dict[str, list[str]] = {}
    for glob, codes in pfi.items():
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise fail(f"per-file-ignores.{glob}", "expected a list of strings")
        for c in codes:
            try:
                catalog.match(c)
            except UnknownSelector as exc:
                raise fail(f"per-file-ignores.{glob}", str(exc)) from None
        problem = _invalid_pattern(glob)
        if problem:
            raise fail("per-file-ignores", f"invalid pattern {glob!r}: {problem}")
        out[glob] = codes
    return out


def parse_options(options: Any, catalog: Catalog, fail) -> dict[str, dict[str, Any]]:
    if not isinstance(options, dict):
        raise fail("options", "expected a table of rule tables")
    out: dict[str, dict[str, Any]] = {}
    for rule_key, values in options.items():
        rule = catalog.get(rule_key)
        if rule is None:
            raise fail(f"options.{rule_key}", "unknown rule")
        if not isinstance(values, dict):
            raise fail(f"options.{rule_key}", "expected a table")
        checked = {}
        for opt, value in values.items():
            if opt not in rule.options:
                known = ", ".join(sorted(rule.options)) or "none"
                raise fail(f"options.{rule_key}.{opt}", f"unknown option (known: {known})")
            try:
                checked[opt] = rule.options[opt].check(rule.name, opt, value)
            except TypeError as exc:
                raise fail(f"options.{rule_key}.{opt}", str(exc)) from None
        out.setdefault(rule.name, {}).update(checked)
    return out


def _did_you_mean(key: str, choices: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
