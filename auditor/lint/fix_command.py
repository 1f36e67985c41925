"""``lint --fix`` and ``lint --diff``: fix the files with findings that have applicable fixes,
write them (or print the diff), report what remains, exit.

The fixing itself (bytes in, bytes out; writing only over unchanged files) is
:mod:`torch_audit.lint.autofix`'s; this module decides which files, where they may be written,
and what is said about it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from torch_audit.findings import Finding
from torch_audit.lint.discover import shown
from torch_audit.lint.engine import FileResult, LintSettings
from torch_audit.lint.autofix import (
    FileChanged,
    FileFix,
    ReadOnly,
    applicable,
    fix_files,
    unified_diff,
    write_if_unchanged,
)
from torch_audit.lint.options import LintOptions
from torch_audit.lint.workers import default_jobs
from torch_audit.lint.selection import Selection
from torch_audit.output import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    OutputError,
    exit_code,
    message,
    stderr,
    write_output,
)
from torch_audit.report import write_report
from torch_audit.report._text import plural


@dataclasses.dataclass
class _Outcome:
    """What fixing (or diffing) the files did."""

    remaining: dict[str, list[Finding]]
    fixed: int = 0
    changed_files: int = 0
    internal_errors: int = 0
    write_failures: int = 0
    diffs: list[str] = dataclasses.field(default_factory=list)

    def left(self) -> list[Finding]:
        return sorted((f for fs in self.remaining.values() for f in fs), key=lambda f: f.sort_key)


def may_write(path: str, root: Any, named: list[str] | tuple[str, ...] | None) -> bool:
    """Whether ``--fix`` may write ``path``: its real path is inside the project root, or inside
    (or is) a path named on the command line. A repository must not make --fix rewrite files
    elsewhere through a link."""
    real = os.path.realpath(path)
    allowed = [os.path.realpath(root)] if root is not None else []
    allowed += [os.path.realpath(p) for p in named or ()]
    for base in allowed:
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def apply_fixes_command(
    findings: list[Finding],
    results: list[FileResult],
    settings: LintSettings,
    options: LintOptions,
    chosen: Selection,
) -> int:
    """``lint --fix`` / ``lint --diff``: fix, write (or diff), render what remains; the exit code.

    A file whose real path is outside the project root (a link in the tree to a file elsewhere)
    is written only when it, or a folder holding it, was named on the command line."""
    by_path: dict[str, list[Finding]] = {}
    for f in findings:
        by_path.setdefault(f.path, []).append(f)
    todo = [p for p, fs in by_path.items() if any(applicable(f, options.unsafe_fixes) for f in fs)]
    fixes = fix_files([(p, chosen.ignored_for(p)) for p in todo], settings, jobs=options.jobs or default_jobs(),
                      unsafe=options.unsafe_fixes)
    refixed = {x.path for x in fixes}
    outcome = _Outcome({p: list(fs) for p, fs in by_path.items()},
                       internal_errors=sum(r.internal_errors for r in results if r.path not in refixed))
    for fx in fixes:
        _take(fx, outcome, settings, options, chosen)
    return _report(outcome, results, settings, options, chosen)


def _take(fx: FileFix, outcome: _Outcome, settings: LintSettings, options: LintOptions, chosen: Selection) -> None:
    """Account for one file's fix: print its notes, write it (``--fix``) or diff it (``--diff``)."""
    for note in fx.notes if not options.quiet else ():
        message(note, "note")
    for tb in fx.tracebacks if settings.verbose else ():
        stderr(tb)
    outcome.internal_errors += fx.internal_errors
    if not fx.changed:
        outcome.remaining[fx.path] = fx.findings if fx.findings or fx.original else outcome.remaining.get(fx.path, [])
        return
    if options.diff:
        outcome.diffs.append(unified_diff(fx.path, fx.original, fx.fixed))  # type: ignore[arg-type]
    elif not _write(fx, outcome, chosen.config.root, options.paths):
        return
    outcome.fixed += fx.applied
    outcome.changed_files += 1
    outcome.remaining[fx.path] = fx.findings


def _write(fx: FileFix, outcome: _Outcome, root: Any, named: tuple[str, ...]) -> bool:
    """Write a fixed file when it may be and is unchanged since it was read; whether it was."""
    if not may_write(fx.path, root, named):
        message(f"{shown(fx.path)}: leads outside the project (a symbolic link); not fixed"
                " (name it on the command line to fix it)", "warning")
        return False
    try:
        write_if_unchanged(fx.path, fx.original, fx.fixed)  # type: ignore[arg-type]
    except FileChanged:
        message(f"{shown(fx.path)}: changed by another program while it was being fixed; not written", "warning")
        return False
    except ReadOnly:
        message(f"{shown(fx.path)}: the file is read-only; not fixed", "warning")
        return False
    except OSError as exc:
        message(f"{fx.path}: cannot write: {exc.strerror or exc}", "error")
        outcome.write_failures += 1
        return False
    return True


def _report(outcome: _Outcome, results: list[FileResult], settings: LintSettings, options: LintOptions,
            chosen: Selection) -> int:
    """The diff (``--diff``) or the findings left (``--fix``), a summary line, the exit code."""
    left = outcome.left()
    try:
        if options.diff:
            write_output("".join(outcome.diffs), options.output_file)
        else:
            write_report(
                left, options.output_format, output_file=options.output_file, quiet=options.quiet,
                statistics=options.statistics, catalog=chosen.catalog, root=chosen.config.root,
                files_checked=len(results), unsafe_fixes=options.unsafe_fixes,
            )
    except OutputError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    if not options.quiet:  # stderr: never mixed into a JSON/SARIF report on stdout
        if not options.diff:
            stderr(f"Fixed {plural(outcome.fixed, 'finding')} ({len(left)} remaining).")
        elif outcome.fixed:
            stderr(f"Would fix {plural(outcome.fixed, 'finding')} in {plural(outcome.changed_files, 'file')}"
                   f" ({len(left)} remaining).")
        else:
            stderr("No fixes to apply.")
    if outcome.write_failures and not outcome.internal_errors:
        return EXIT_ERROR
    if options.diff:  # exit 1 when there is a diff (as Ruff), whatever --fail-on says
        status = exit_code([], internal_errors=outcome.internal_errors, verbose=settings.verbose)
        return status or (EXIT_FINDINGS if outcome.diffs and "".join(outcome.diffs) else EXIT_OK)
    return exit_code(left, fail_on=options.fail_on, exit_zero=options.exit_zero,
                     internal_errors=outcome.internal_errors, verbose=settings.verbose)
