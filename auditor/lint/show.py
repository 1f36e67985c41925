"""``lint --show-settings`` and ``lint --show-files``: which settings apply, and to which files.

Each setting is printed with where its value came from: the command line, the configuration
file (named), or the default. Nothing is linted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch_audit.config import Config
from torch_audit.lint.discover import DEFAULT_EXCLUDES, Discovery
from torch_audit.lint.options import LintOptions
from torch_audit.paths import display_path

DEFAULT = "default"
COMMAND_LINE = "command line"


def _source(config: Config, key: str, from_cli: bool) -> str:
    if from_cli:
        return COMMAND_LINE
    if key in config.keys_set and config.path is not None:
        return str(config.path)
    return DEFAULT


def _toml(value: Any) -> str:
    if value is None:
        return '"latest"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def settings_rows(
    config: Config, options: LintOptions, torch_version: str | None
) -> list[tuple[str, Any, str]]:
    """``(key, value, source)`` for every setting of the linter."""

    def row(key: str, file_value: Any, opt: str | None = None, cli_value: Any = None):
        from_cli = opt is not None and options.given(opt)
        source = _source(config, key, from_cli)
        if from_cli and key in config.keys_set and config.path is not None and key != "exclude":
            source = f"{config.path} + {COMMAND_LINE}"  # the command line adds to the file's list
        return key, (cli_value if from_cli else file_value), source

    select = config.select if config.select is not None else "(every stable rule that is not opt-in)"
    exclude = list(config.exclude) if config.exclude is not None else list(DEFAULT_EXCLUDES)
    preview_cli = options.preview
    force_cli = bool(options.force_exclude)
    if options.given("select"):  # a --select starts afresh: the file's ignore and extend-select drop out
        dropped = "command line (--select drops the file's value)"
        selection = [
            ("select", options.selectors("select"), COMMAND_LINE),
            ("ignore", options.selectors("ignore"), dropped),
            ("extend-select", options.selectors("extend_select"), dropped),
        ]
    else:
        selection = [
            row("select", select),
            row("ignore", config.ignore, "ignore", [*config.ignore, *options.selectors("ignore")]),
            row("extend-select", config.extend_select, "extend_select",
                [*config.extend_select, *options.selectors("extend_select")]),
        ]
    return [
        *selection,
        ("preview", config.preview if preview_cli is None else preview_cli,
         _source(config, "preview", preview_cli is not None)),
        ("torch-version", torch_version, _source(config, "torch-version", options.given("torch_version"))),
        row("exclude", exclude, "exclude", list(options.exclude)),
        row("extend-exclude", config.extend_exclude, "extend_exclude",
            [*config.extend_exclude, *options.extend_exclude]),
        ("respect-gitignore", config.respect_gitignore, _source(config, "respect-gitignore", False)),
        ("force-exclude", force_cli or config.force_exclude, _source(config, "force-exclude", force_cli)),
        ("per-file-ignores", config.per_file_ignores, _source(config, "per-file-ignores", False)),
        ("options", config.options, _source(config, "options", False)),
    ]


def show_settings(config: Config, options: LintOptions, rules: list, torch_version: str | None, catalog) -> str:
    lines = [
        f"Configuration file: {config.path if config.path is not None else '(none found; defaults)'}",
        f"Project root: {config.root}",
        "",
        "Settings (value  # where it came from):",
    ]
    rows = settings_rows(config, options, torch_version)
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        if isinstance(value, dict):
            rendered = "{}" if not value else json.dumps(value, sort_keys=True)
        elif isinstance(value, str) and value.startswith("("):
            rendered = value
        else:
            rendered = _toml(value)
        lines.append(f"  {key.ljust(width)} = {rendered}  # {source}")
    lines += ["", f"Enabled rules ({len(rules)}):"]
    lines += [f"  {r.code}  {r.name}" for r in sorted(rules, key=lambda r: r.code)]
    return "\n".join(lines) + "\n"


def _forms(path: Path, root: Path) -> list[str]:
    """The spellings discovery matches a skipped path by: its name and its path relative to the
    root, and for a file named explicitly (``--force-exclude``) its directories' too."""
    is_dir = path.is_dir()
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.name
    forms = [(path.name, is_dir), (rel, is_dir)]
    parts = Path(rel).parts
    for i in range(len(parts) - 1):
        forms += [(parts[i], True), ("/".join(parts[: i + 1]), True)]
    return [form + "/" if is_directory else form for form, is_directory in forms]


def _skip_reason(path: Path, reason: str, config: Config, options: LintOptions) -> str:
    if reason != "exclude":
        return f"listed in {display_path(reason)}"
    import pathspec

    replaced, extended = options.excludes(config)
    groups = [
        (replaced, "exclude") if replaced is not None else (list(DEFAULT_EXCLUDES), "the default excludes"),
        (extended, "extend-exclude"),
    ]
    forms = _forms(path, config.root)
    for patterns, label in groups:
        for pattern in patterns:
            spec = pathspec.GitIgnoreSpec.from_lines([pattern])
            if any(spec.match_file(form) for form in forms):
                return f"matches {pattern!r} in {label}"
    return "excluded"


def show_files(found: Discovery) -> str:
    """The files that would be linted, one per line (for ``xargs``)."""
    return "".join(display_path(str(path)) + "\n" for path in sorted(found.files))


def skipped_lines(found: Discovery, config: Config, options: LintOptions) -> list[str]:
    """What the excludes and the .gitignore files kept out (a directory once, not its
    contents), each with the pattern or file responsible."""
    return [
        f"skipped {display_path(str(path))}{'/' if path.is_dir() else ''}: {_skip_reason(path, reason, config, options)}"
        for path, reason in sorted(found.skipped)
    ]
