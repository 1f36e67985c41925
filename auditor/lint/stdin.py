"""``lint --stdin-filename PATH``: lint source read from standard input, as the file ``PATH``.

For editors and formatter-style integrations (as Ruff's option): the source comes from standard
input (when the path argument is ``-`` or absent), findings are reported under ``PATH``, and
``PATH`` decides the configuration file, per-file-ignores and excludes (an excluded path has no
findings). With ``--fix`` the fixed source (or the input unchanged) goes to standard output and
the findings left go to standard error; ``--diff`` prints the diff.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from torch_audit.findings import Finding
from torch_audit.output import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_OK,
    OutputError,
    exit_code,
    message,
    stderr,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.lint.options import LintOptions
    from torch_audit.lint.selection import Selection


def is_excluded(path: Path, config: Any, options: "LintOptions | None" = None) -> bool:
    """Whether directory discovery would skip ``path`` (its name, or a parent directory's name
    or path relative to the project root, matches an exclude glob; build outputs): the walk's
    own decision, :func:`torch_audit.lint.discover.path_excluded`."""
    from torch_audit.lint.discover import DEFAULT_EXCLUDES, path_excluded
    from torch_audit.lint.options import LintOptions

    exclude, extend_exclude = (options or LintOptions()).excludes(config)
    return path_excluded(
        Path(path),
        exclude=exclude if exclude is not None else DEFAULT_EXCLUDES,
        extend_exclude=extend_exclude,
        root=Path(config.root),
    )


def read_stdin() -> bytes:
    return sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")


def lint_stdin_bytes(filename: str, data: bytes, settings: Any, ignored: frozenset[str]) -> Any:
    """The :class:`~torch_audit.lint.engine.FileResult` of the standard input's bytes."""
    from torch_audit.lint.sources import lint_source
    from torch_audit.lint.project import project_of

    if settings.whole_program:
        settings.project = project_of(filename, data)  # it sees the local modules it imports
    result = lint_source(filename, data, settings)
    if ignored:
        result.findings = [f for f in result.findings if f.code not in ignored]
    return result


def fix_stdin(
    filename: str, data: bytes, settings: Any, options: "LintOptions", *, ignored: frozenset[str], excluded: bool,
    catalog: Any, root: Path,
) -> int:
    """``--fix``/``--diff`` on standard input: the fixed source (``--fix``) or the diff on
    standard output, the findings left on standard error."""
    from torch_audit.lint.autofix import fix_bytes, unified_diff
    from torch_audit.report import render

    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    if excluded:
        if not options.diff:
            _write_bytes(out, data)  # an editor replaces the buffer with this: never empty it
        return EXIT_OK
    fx = fix_bytes(filename, data, settings, unsafe=options.unsafe_fixes, ignored=ignored)
    fixed = fx.fixed if fx.changed else data
    if options.diff:
        if fx.changed:
            click.echo(unified_diff(filename, data, fixed), nl=False)
    else:
        _write_bytes(out, fixed)
    left: list[Finding] = fx.findings
    for tb in fx.tracebacks if settings.verbose else ():
        stderr(tb)
    for note in fx.notes if not options.quiet else ():
        message(note, "note")
    if left and not options.diff:
        text = render(left, "text", catalog=catalog, root=root, color=False, statistics=False,
                      show_fix_hint=False, summary=False, files_checked=1)
        click.echo(text, nl=False, err=True)
    if fx.internal_errors:  # the tracebacks were printed with --verbose; no summary line here
        return EXIT_ERROR
    if options.diff:
        return EXIT_FINDINGS if fx.changed else EXIT_OK
    return exit_code(left, fail_on=options.fail_on, exit_zero=options.exit_zero)


def _write_bytes(out: Any, data: bytes) -> None:
    if out is not None:
        out.write(data)
        out.flush()
    else:  # click's test runner without a binary stdout
        click.echo(data.decode("utf-8", "surrogateescape"), nl=False)


def run_stdin(options: "LintOptions", chosen: "Selection", *, torch_version: str | None) -> int:
    """``lint --stdin-filename``, from the resolved selection on: the exit code."""
    from torch_audit.lint.discover import InvalidPattern
    from torch_audit.lint.engine import LintSettings
    from torch_audit.lint.selection import relative

    filename = options.stdin_filename
    assert filename is not None
    config = chosen.config
    data = read_stdin()
    try:
        excluded = is_excluded(Path(filename), config, options)
    except InvalidPattern as exc:  # a usage error, as in a directory walk
        message(str(exc), "error")
        return EXIT_ERROR
    ignored = chosen.ignored_for(filename)
    settings = LintSettings.of(chosen.rules, config, torch_version, verbose=options.verbose)
    if options.fixing:
        return fix_stdin(filename, data, settings, options, ignored=ignored, excluded=excluded,
                         catalog=chosen.catalog, root=config.root)
    findings: list[Finding] = []
    internal_errors = 0
    if not excluded:
        result = lint_stdin_bytes(filename, data, settings, ignored)
        findings, internal_errors = result.findings, result.internal_errors
        for note in result.notes if not options.quiet else ():
            message(note, "note")
        for tb in result.tracebacks if settings.verbose else ():
            stderr(tb)
    if options.write_baseline or options.baseline:
        from torch_audit.lint.baseline import apply_baseline_options

        findings, done = apply_baseline_options(
            findings, options, root=config.root, relative=relative,
            read=lambda p: data if p == filename else None,
        )
        if done is not None:
            return done
    from torch_audit.report import write_report

    try:
        write_report(
            sorted(findings, key=lambda f: f.sort_key), options.output_format,
            output_file=options.output_file, quiet=options.quiet, statistics=options.statistics,
            color=False, catalog=chosen.catalog, root=config.root, files_checked=0 if excluded else 1,
            unsafe_fixes=options.unsafe_fixes,
        )
    except OutputError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    return exit_code(findings, fail_on=options.fail_on, exit_zero=options.exit_zero,
                     internal_errors=internal_errors, verbose=settings.verbose)
