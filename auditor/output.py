"""A command's way out: the output formats, the report on standard output or in a file, the exit
code. ``lint``, ``lint --fix``/``--diff``, ``lint --stdin-filename`` (and ``run``) end here;
``torch_audit.report.write_report`` renders a report and writes it through :func:`write_output`.

Exit codes, as Ruff: 0 no findings (or none at or above ``--fail-on``, or ``--exit-zero``),
1 findings, 2 usage, configuration or internal error, 130 interrupted.

Light on purpose: the command line imports it to list the formats, so it imports neither the
reporters nor ``tempfile`` (an output file is written through :mod:`torch_audit.atomic`, loaded
when there is one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from torch_audit.findings import Finding, Severity

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
#: Ctrl-C (SIGINT's 128 + 2); SIGTERM exits 143
EXIT_INTERRUPTED = 130

#: Every output format of ``torch_audit.report.render``, in the order ``--help`` lists them.
FORMATS = ("text", "full", "json", "sarif", "github", "gitlab", "junit")
#: The formats for people: ``text`` (one line per finding, Ruff's ``concise``) and ``full``
#: (the same lines, each followed by its source frame and its ``= help:`` line, Ruff's ``full``).
TEXT_FORMATS = ("text", "full")
#: ``--fail-on`` levels, lowest first; the default (``None``) fails on any finding.
FAIL_LEVELS = ("info", "warning", "error")


class OutputError(Exception):
    """The report cannot be written where it was asked to go (a usage error: exit 2)."""


def stderr(text: str) -> None:
    """``text`` as is (a traceback, a summary line) on standard error."""
    import click

    click.echo(text, err=True)


def message(text: str, kind: str | None = None) -> None:
    """One line of the tool's own on standard error: ``torch-audit: <kind>: <text>`` (or
    ``torch-audit: <text>`` without a kind). Never on standard output, which holds the report."""
    stderr(f"torch-audit: {kind}: {text}" if kind else f"torch-audit: {text}")


def write_output(text: str, output_file: str | os.PathLike[str] | None, *, color: bool | None = None) -> None:
    """Print ``text``, or write it to ``output_file`` atomically (never half a report on disk;
    missing parent directories are made). ``color=True`` keeps ANSI colour that click would strip
    when stdout is not a terminal (``FORCE_COLOR``). Raises :class:`OutputError`."""
    if output_file is None:
        if text:
            import click

            click.echo(text, nl=False, color=color)
        return
    from torch_audit.atomic import write_text_atomic  # tempfile: only with an output file

    try:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(output_file), text)
    except OSError as exc:
        raise OutputError(f"cannot write {os.fspath(output_file)}: {exc.strerror or exc}") from None


def fail_level(value: "str | Severity | None", default: str = "info") -> "Severity":
    """``--fail-on`` / ``fail-on`` as a severity (``None``: ``default``). Raises ValueError."""
    from torch_audit.findings import Severity

    return Severity.parse(value or default)


def fails(findings: Iterable["Finding"], fail_on: "str | Severity | None") -> bool:
    """Whether ``findings`` fail the run: one at or above ``fail_on`` (by default ``info``, so
    that any finding fails)."""
    threshold = fail_level(fail_on).rank
    return any(f.severity.rank >= threshold for f in findings)


def exit_code(
    findings: Iterable["Finding"],
    *,
    fail_on: "str | Severity | None" = None,
    exit_zero: bool = False,
    internal_errors: int = 0,
    verbose: bool = False,
) -> int:
    """The exit decision: 2 after internal errors (saying so, unless ``verbose`` already printed
    their tracebacks), else 1 when the findings fail the run (:func:`fails`) and not
    ``exit_zero``, else 0."""
    if internal_errors:
        if not verbose:
            message(f"{internal_errors} internal error(s); run with --verbose for tracebacks", "error")
        return EXIT_ERROR
    if not exit_zero and fails(findings, fail_on):
        return EXIT_FINDINGS
    return EXIT_OK
