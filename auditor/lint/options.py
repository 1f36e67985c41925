"""``torch-audit lint``'s options: one frozen object, validated once when it is made.

The command line (``torch_audit.cli``) builds a :class:`LintOptions` and hands it to the drivers
(``command``, ``fix_command``, ``stdin``, ``baseline``, ``add_noqa``, ``show``), which read
attributes instead of passing ``**opts`` dicts along. A problem with the options themselves is an
:class:`OptionsError` (exit 2), raised before any configuration is read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch_audit.config import TORCH_VERSION, split_selectors
from torch_audit.output import FAIL_LEVELS, FORMATS

__all__ = ["LintOptions", "OptionsError"]


class OptionsError(ValueError):
    """Options that cannot be used together, or a value of the wrong form (exit 2)."""


#: The options that change what a run does, as named on the command line: one at a time, and
#: not with --fix/--diff (which would rewrite the lines they key on).
_ADOPTION = (("--add-noqa", "add_noqa"), ("--baseline", "baseline"), ("--write-baseline", "write_baseline"))
_FIXING = (("--fix", "fix"), ("--diff", "diff"))


@dataclasses.dataclass(frozen=True)
class LintOptions:
    """Every option of ``torch-audit lint``, as given (defaults: none given).

    Selectors (``select``, ``ignore``, ``extend_select``) and globs are kept as given, a value
    per flag; :meth:`selectors` splits the comma-separated ones. ``stdin_filename`` is set when
    standard input is linted (``-`` when it has no name)."""

    paths: tuple[str, ...] = (".",)
    config_file: Path | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    preview: bool | None = None
    output_format: str = "text"
    output_file: str | None = None
    statistics: bool = False
    exit_zero: bool = False
    no_cache: bool = False
    jobs: int | None = None
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    torch_version: str | None = None
    fix: bool = False
    unsafe_fixes: bool = False
    diff: bool = False
    force_exclude: bool | None = None
    show_settings: bool = False
    show_files: bool = False
    fail_on: str | None = None
    add_noqa: bool = False
    baseline: Path | None = None
    write_baseline: Path | None = None
    stdin_filename: str | None = None
    verbose: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("paths", "select", "ignore", "extend_select", "exclude", "extend_exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, tuple):  # a list, or one string
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value or ()))
        self._validate()

    def _validate(self) -> None:
        chosen = [flag for flag, key in (*_ADOPTION, *_FIXING) if getattr(self, key)]
        if len(chosen) > 1 and any(flag for flag, key in _ADOPTION if getattr(self, key)):
            raise OptionsError(f"{chosen[0]} cannot be combined with {chosen[1]}")
        if self.stdin_filename is not None and self.add_noqa:
            raise OptionsError("--add-noqa needs files to edit, not standard input")
        if self.torch_version not in (None, "latest") and not TORCH_VERSION.fullmatch(self.torch_version):
            raise OptionsError(f'--torch-version expects a version like "2.4", got {self.torch_version!r}')
        if self.output_format not in FORMATS:
            raise OptionsError(f"unknown output format {self.output_format!r} (expected one of: {', '.join(FORMATS)})")
        if self.fail_on is not None and self.fail_on not in FAIL_LEVELS:
            raise OptionsError(f"--fail-on expects one of {', '.join(FAIL_LEVELS)}, got {self.fail_on!r}")
        if self.jobs is not None and self.jobs < 1:
            raise OptionsError(f"--jobs expects a positive number, got {self.jobs}")

    @classmethod
    def from_command_line(cls, paths: tuple[str, ...] | list[str], **opts: Any) -> "LintOptions":
        """The options of ``lint PATHS --flags``. Standard input is read, as Ruff does, when
        PATHS is ``-``, or absent with ``--stdin-filename``; its name (``-`` without
        ``--stdin-filename``) then stands for the paths."""
        named = list(paths)
        stdin = opts.pop("stdin_filename", None)
        if named in ([], ["-"]) and (named or stdin is not None):
            stdin = "-" if stdin is None else stdin
            named = [stdin]
        else:
            stdin = None  # files named: they are linted, standard input is not read
        return cls(paths=tuple(named) or (".",), stdin_filename=stdin, **opts)

    # -- derived ---------------------------------------------------------------------------
    @property
    def fixing(self) -> bool:
        """``--fix`` or ``--diff``."""
        return self.fix or self.diff

    def given(self, name: str) -> bool:
        """Whether the option ``name`` was given on the command line (a non-empty value)."""
        return getattr(self, name) not in (None, (), [], False)

    def selectors(self, name: str) -> list[str]:
        """``select``, ``ignore`` or ``extend_select``, comma-separated values split."""
        return split_selectors(getattr(self, name))

    def excludes(self, config: Any) -> tuple[list[str] | None, list[str]]:
        """``(exclude, extend_exclude)``: the command line's ``--exclude`` replaces the file's
        list (None: the defaults), ``--extend-exclude`` adds to the file's."""
        return list(self.exclude) or config.exclude, [*config.extend_exclude, *self.extend_exclude]

    def target_torch_version(self, config: Any) -> str | None:
        """The torch version the code targets: ``--torch-version`` (``latest``: none), else the
        configuration's."""
        if self.torch_version == "latest":
            return None
        return self.torch_version if self.torch_version is not None else config.torch_version
