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
from typing import Any

import click

from torch_audit.findings import Finding
from torch_audit.output import EXIT_ERROR, OutputError, exit_code, message, write_report


def is_excluded(path: Path, config: Any, opts: dict[str, Any]) -> bool:
    """Whether directory discovery would skip ``path`` (its name, or a parent directory's name
    or path relative to the project root, matches an exclude glob; build outputs): the walk's
    own decision, :func:`torch_audit.lint.discover.path_excluded`."""
    from torch_audit.lint.discover import DEFAULT_EXCLUDES, path_excluded

    exclude = list(opts.get("exclude") or ()) or config.exclude
    return path_excluded(
        Path(path),
        exclude=exclude if exclude is not None else DEFAULT_EXCLUDES,
        extend_exclude=[*config.extend_exclude, *(opts.get("extend_exclude") or ())],
        root=Path(config.root),
    )


def read_stdin() -> bytes:
    return sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")


def lint_stdin_bytes(filename: str, data: bytes, settings: Any, ignored: frozenset[str]) -> Any:
    """The :class:`~torch_audit.lint.engine.FileResult` of the standard input's bytes."""
    from torch_audit.lint.engine import lint_source
    from torch_audit.lint.project import project_of

    if settings.whole_program:
        settings.project = project_of(filename, data)  # it sees the local modules it imports
    result = lint_source(filename, data, settings)
    if ignored:
        result.findings = [f for f in result.findings if f.code not in ignored]
    return result


def fix_stdin(
    filename: str, data: bytes, settings: Any, opts: dict[str, Any], *, ignored: frozenset[str], excluded: bool,
    catalog: Any, root: Path,
) -> int:
    """``--fix``/``--diff`` on standard input: the fixed source (``--fix``) or the diff on
    standard output, the findings left on standard error."""
    from torch_audit.lint.fixer import fix_bytes, unified_diff
    from torch_audit.output import fails
    from torch_audit.report import render

    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    if excluded:
        if not opts.get("diff"):
            _write_bytes(out, data)  # an editor replaces the buffer with this: never empty it
        return 0
    fx = fix_bytes(filename, data, settings, unsafe=bool(opts.get("unsafe_fixes")), ignored=ignored)
    fixed = fx.fixed if fx.changed else data
    if opts.get("diff"):
        if fx.changed:
            click.echo(unified_diff(filename, data, fixed), nl=False)
    else:
        _write_bytes(out, fixed)
    left: list[Finding] = fx.findings
    if settings.verbose:
        for tb in fx.tracebacks:
            click.echo(tb, err=True)
    if not opts.get("quiet"):
        for note in fx.notes:
            click.echo(f"torch-audit: note: {note}", err=True)
    if left and not opts.get("diff"):
        text = render(left, "text", catalog=catalog, root=root, color=False, statistics=False,
                      show_fix_hint=False, summary=False, files_checked=1)
        click.echo(text, nl=False, err=True)
    if fx.internal_errors:
        return 2
    if opts.get("diff"):
        return 1 if fx.changed else 0
    return 1 if not opts.get("exit_zero") and fails(left, opts.get("fail_on")) else 0


def _write_bytes(out: Any, data: bytes) -> None:
    if out is not None:
        out.write(data)
        out.flush()
    else:  # click's test runner without a binary stdout
        click.echo(data.decode("utf-8", "surrogateescape"), nl=False)


def run_stdin(
    filename: str, opts: dict[str, Any], *, config: Any, catalog: Any, rules: list[Any], pfi: Any,
    torch_version: str | None,
) -> int:
    """``lint --stdin-filename``, from the resolved configuration on: the exit code."""
    from torch_audit.lint.command import _pfi_codes, _relative
    from torch_audit.lint.engine import LintSettings

    from torch_audit.lint.discover import InvalidPattern

    data = read_stdin()
    path = Path(filename)
    try:
        excluded = is_excluded(path, config, opts)
    except InvalidPattern as exc:  # a usage error, as in a directory walk
        click.echo(f"torch-audit: error: {exc}", err=True)
        return 2
    ignored = _pfi_codes(pfi, filename, config.root)
    settings = LintSettings.of(rules, config, torch_version, verbose=bool(opts.get("verbose")))
    if opts.get("fix") or opts.get("diff"):
        return fix_stdin(filename, data, settings, opts, ignored=ignored, excluded=excluded, catalog=catalog,
                         root=config.root)
    quiet = bool(opts.get("quiet"))
    findings: list[Finding] = []
    internal_errors = 0
    if not excluded:
        result = lint_stdin_bytes(filename, data, settings, ignored)
        findings, internal_errors = result.findings, result.internal_errors
        for note in result.notes if not quiet else ():
            click.echo(f"torch-audit: note: {note}", err=True)
        for tb in result.tracebacks if settings.verbose else ():
            click.echo(tb, err=True)
    if opts.get("write_baseline") or opts.get("baseline"):
        from torch_audit.lint.baseline import apply_baseline_options

        findings, done = apply_baseline_options(
            findings, opts, root=config.root, relative=_relative,
            read=lambda p: data if p == filename else None,
        )
        if done is not None:
            return done
    try:
        write_report(
            sorted(findings, key=lambda f: f.sort_key), opts.get("output_format") or "text",
            output_file=opts.get("output_file"), quiet=quiet, statistics=bool(opts.get("statistics")),
            color=False, catalog=catalog, root=config.root, files_checked=0 if excluded else 1,
            unsafe_fixes=bool(opts.get("unsafe_fixes")),
        )
    except OutputError as exc:
        message(str(exc), "error")
        return EXIT_ERROR
    return exit_code(findings, fail_on=opts.get("fail_on"), exit_zero=bool(opts.get("exit_zero")),
                     internal_errors=internal_errors, verbose=settings.verbose)
