"""``torch-audit lint``: options → selection → discovery → engine → report → exit code.

:func:`run_lint` is the driver; each stage is a function of its own. The ``--fix``/``--diff``,
``--stdin-filename``, ``--add-noqa``, baseline and ``--show-*`` branches live in their own modules,
imported when they are used. Output and exit codes are :mod:`torch_audit.output`'s.
"""

from __future__ import annotations

import dataclasses
import sys

from torch_audit import __version__
from torch_audit.findings import Finding
from torch_audit.lint.discover import DEFAULT_EXCLUDES, Discovery, PathNotFound, discover
from torch_audit.lint.engine import FileResult, LintSettings
from torch_audit.lint.options import LintOptions
from torch_audit.lint.runner import ProgressBar, lint_files
from torch_audit.lint.workers import default_jobs
from torch_audit.lint.selection import Selection, SelectionError, relative, select
from torch_audit.output import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OutputError,
    exit_code,
    message,
    stderr,
    write_output,
)

#: Show a progress bar from this many files on, and only on a terminal.
PROGRESS_MIN_FILES = 300


class _Stop(Exception):
    """A stage ended the run with this exit code (its messages are printed)."""

    def __init__(self, code: int) -> None:
        self.code = code


@dataclasses.dataclass
class LintRun:
    """What linting the discovered files produced, per-file-ignores applied."""

    files: int
    results: list[FileResult]
    findings: list[Finding]
    internal_errors: int


def run_lint(options: LintOptions) -> int:
    """``torch-audit lint`` with ``options``: the exit code."""
    try:
        chosen = select(options.paths, options)
    except SelectionError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    config = chosen.config
    torch_version = options.target_torch_version(config)
    if options.verbose:
        if config.path is not None:
            message(f"using configuration file {config.path}")
        else:
            message(f"no configuration file found from {options.paths[0]} upwards; using the defaults")
    if options.show_settings:
        from torch_audit.lint.show import show_settings

        write_output(show_settings(config, options, chosen.rules, torch_version, chosen.catalog), None)
        return EXIT_OK
    if options.stdin_filename is not None:
        from torch_audit.lint.stdin import run_stdin

        return run_stdin(options, chosen, torch_version=torch_version)
    try:
        found = _discover(options, chosen)
    except _Stop as stop:
        return stop.code
    if not found.files:
        if not options.quiet:
            message("no Python files found under " + ", ".join(options.paths), "note")
        return EXIT_OK
    settings = LintSettings.of(chosen.rules, config, torch_version, verbose=options.verbose)
    try:
        run = _lint(found, settings, options, chosen)
    except _Stop as stop:
        return stop.code
    return _finish(run, settings, options, chosen)


def _discover(options: LintOptions, chosen: Selection) -> Discovery:
    """The files to lint (``--show-files`` prints them and stops the run)."""
    config = chosen.config
    exclude, extend_exclude = options.excludes(config)
    try:
        found = discover(
            list(options.paths),
            exclude=exclude if exclude is not None else DEFAULT_EXCLUDES,
            extend_exclude=extend_exclude,
            root=config.root,
            respect_gitignore=config.respect_gitignore,
            force_exclude=bool(options.force_exclude or config.force_exclude),
        )
    except PathNotFound as exc:
        message(str(exc), "error")
        raise _Stop(EXIT_ERROR) from None
    for w in found.warnings:
        message(w, "warning")
    if options.show_files:
        from torch_audit.lint.show import show_files, skipped_lines

        write_output(show_files(found), None)
        for line in skipped_lines(found, config, options):  # stderr: stdout stays a list of files
            message(line)
        raise _Stop(EXIT_OK)
    return found


def _lint(found: Discovery, settings: LintSettings, options: LintOptions, chosen: Selection) -> LintRun:
    """Lint the files (cached, in workers), print their notes, apply the per-file-ignores."""
    cache = None
    if not options.no_cache:
        from torch_audit.lint.cache import Cache  # hashing and JSON: not needed with --no-cache

        cache = Cache(chosen.config.root, settings.fingerprint(__version__))
    progress = None
    if len(found.files) >= PROGRESS_MIN_FILES and sys.stderr.isatty() and not options.quiet:
        progress = ProgressBar(len(found.files))
    try:
        results, read_warnings = lint_files(
            found.files, settings, jobs=options.jobs or default_jobs(), cache=cache, on_progress=progress
        )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the runner's Terminated)
        if progress:
            progress.close()
        message(getattr(exc, "message", "interrupted"))
        raise _Stop(getattr(exc, "exit_code", EXIT_INTERRUPTED)) from None
    if progress:
        progress.close()
    for w in read_warnings:
        message(w, "warning")
    findings: list[Finding] = []
    internal_errors = 0
    for result in results:
        internal_errors += result.internal_errors
        for note in result.notes if not options.quiet else ():
            message(note, "note")
        for tb in result.tracebacks if settings.verbose else ():
            stderr(tb)
        ignored = chosen.ignored_for(result.path)
        findings.extend(f for f in result.findings if f.code not in ignored)
    return LintRun(len(found.files), results, findings, internal_errors)


def _finish(run: LintRun, settings: LintSettings, options: LintOptions, chosen: Selection) -> int:
    """What the run does with its findings: add suppressions, write or apply a baseline, fix,
    or report them; the exit code."""
    findings = run.findings
    if options.add_noqa:
        from torch_audit.lint.add_noqa import add_noqa_command

        return add_noqa_command(run.results, settings, options, ignored_for=chosen.ignored_for)
    if options.write_baseline or options.baseline:
        from torch_audit.lint.baseline import apply_baseline_options

        findings, done = apply_baseline_options(findings, options, root=chosen.config.root, relative=relative)
        if done is not None:
            if done == EXIT_OK and run.internal_errors:  # the baseline lacks what the failing rules missed
                message(f"{run.internal_errors} internal error(s); run with --verbose for tracebacks", "error")
                return EXIT_ERROR
            return done
    if options.fixing:
        from torch_audit.lint.fix_command import apply_fixes_command

        return apply_fixes_command(findings, run.results, settings, options, chosen)
    findings.sort(key=lambda f: f.sort_key)
    from torch_audit.report import write_report

    try:
        write_report(
            findings, options.output_format, output_file=options.output_file, quiet=options.quiet,
            statistics=options.statistics, catalog=chosen.catalog, root=chosen.config.root,
            files_checked=run.files, unsafe_fixes=options.unsafe_fixes,
        )
    except OutputError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    return exit_code(findings, fail_on=options.fail_on, exit_zero=options.exit_zero,
                     internal_errors=run.internal_errors, verbose=settings.verbose)
