"""Rendering findings: ``text``, ``full``, ``json``, ``sarif``, ``github``, ``gitlab`` and ``junit``.

The one entry point is :func:`render`; it returns the whole output as a string (ending in a
newline unless empty) and never prints. Every format orders findings the same stable way
(path, line, column, code, then step and module for runtime findings).

Fix markers follow Ruff: a finding gets ``[*]`` when ``--fix`` would apply its fix, i.e. a safe
fix, or an unsafe one when ``unsafe_fixes=True``. Unsafe fixes that are not applied are counted in
the summary as hidden fixes, together with ``hidden_unsafe_fixes`` (for callers that strip unsafe
fixes from findings before rendering).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch_audit.findings import Finding
from torch_audit.output import FORMATS, TEXT_FORMATS, write_output  # the one list of formats
from torch_audit.report._github import escape_data, escape_property, render_github
from torch_audit.report._json import escape_surrogates_in_json, render_json, render_json_statistics
from torch_audit.report._sarif import render_sarif, sarif_log
from torch_audit.report._text import color_wanted, render_statistics, render_text, summary_lines
from torch_audit.report._text import statistics as rule_statistics

__all__ = [
    "FORMATS",
    "color_wanted",
    "TEXT_FORMATS",
    "escape_data",
    "escape_property",
    "render",
    "sarif_log",
    "rule_statistics",
    "summary_lines",
    "write_report",
]


def render(
    findings: list[Finding],
    fmt: str,
    *,
    catalog: Any | None = None,
    root: str | os.PathLike[str] = ".",
    color: bool = False,
    statistics: bool = False,
    show_fix_hint: bool = True,
    tool_name: str = "torch-audit",
    files_checked: int | None = None,
    hidden_unsafe_fixes: int = 0,
    unsafe_fixes: bool = False,
    summary: bool = True,
) -> str:
    """Render ``findings`` in format ``fmt`` (one of :data:`FORMATS`).

    - ``catalog``: a :class:`~torch_audit.catalog.Catalog` for SARIF rule metadata; codes it does
      not know (engine codes) get a minimal descriptor.
    - ``root``: SARIF URIs are relative to it (``uriBaseId`` ``%SRCROOT%``), and so are GitLab
      paths unless ``CI_PROJECT_DIR`` is set; GitHub annotation paths are relative to
      ``GITHUB_WORKSPACE`` when it is set, else to the current directory.
    - ``color``: ANSI colour in ``text`` (the caller decides, e.g. from ``isatty``).
    - ``statistics``: per-rule counts instead of findings; a JSON list of ``{code, name, count,
      fixable}`` for ``json``, a Ruff-style table for every other format.
    - ``show_fix_hint``: the ``[*] N fixable with the `--fix` option`` summary lines (text).
    - ``files_checked``: mentioned in the text summary when given.
    - ``summary``: ``False`` leaves out the text summary (``--quiet``): the finding lines only.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    text = _render(findings, fmt, catalog=catalog, root=root, color=color, statistics=statistics,
                   show_fix_hint=show_fix_hint, tool_name=tool_name, files_checked=files_checked,
                   hidden_unsafe_fixes=hidden_unsafe_fixes, unsafe_fixes=unsafe_fixes, summary=summary)
    if fmt in ("json", "sarif", "gitlab"):  # file names that are not UTF-8 (issue 18 item 12)
        text = escape_surrogates_in_json(text)
    return text


def _render(findings, fmt, *, catalog, root, color, statistics, show_fix_hint, tool_name, files_checked,
            hidden_unsafe_fixes, unsafe_fixes, summary) -> str:
    findings = list(findings)
    if statistics:
        if fmt == "json":
            return render_json_statistics(rule_statistics(findings, unsafe_fixes=unsafe_fixes))
        return render_statistics(findings, color=color, unsafe_fixes=unsafe_fixes)
    if fmt in TEXT_FORMATS:
        return render_text(
            findings,
            color=color,
            show_fix_hint=show_fix_hint,
            files_checked=files_checked,
            unsafe_fixes=unsafe_fixes,
            hidden_unsafe_fixes=hidden_unsafe_fixes,
            show_help=fmt == "full",
            summary=summary,
        )
    if fmt == "json":
        return render_json(findings)
    if fmt == "github":
        return render_github(findings)
    if fmt == "gitlab":
        from torch_audit.report._gitlab import render_gitlab

        return render_gitlab(findings, root=root)
    if fmt == "junit":
        from torch_audit.report._junit import render_junit

        return render_junit(findings, tool_name=tool_name)
    return render_sarif(findings, catalog=catalog, root=Path(root), tool_name=tool_name)


def finding_lines(text: str) -> str:
    """The lines of a ``text`` report that are findings (``--quiet``): no summary, no notes."""
    return "".join(line + "\n" for line in text.splitlines() if line and ":" in line.split(" ")[0])


def write_report(
    findings: list["Finding"],
    fmt: str,
    *,
    output_file: str | None = None,
    quiet: bool = False,
    statistics: bool = False,
    color: bool | None = None,
    **render_args: Any,
) -> None:
    """Render ``findings`` (:func:`render`) and write them (:func:`torch_audit.output.write_output`).

    ``color=None`` decides as the linter does: ANSI colour for ``text``/``full`` on standard
    output when it is wanted (``NO_COLOR``, ``FORCE_COLOR``, a terminal). ``quiet``: no summary
    (and for ``text``, only the finding lines). ``render_args`` go to ``render`` (``catalog``,
    ``root``, ``files_checked``, ``unsafe_fixes``, ...). Raises :class:`~torch_audit.output.OutputError`."""
    import sys

    if color is None:
        color = fmt in TEXT_FORMATS and output_file is None and color_wanted(sys.stdout)
    text = render(findings, fmt, color=color, statistics=statistics, show_fix_hint=not quiet,
                  summary=not quiet, **render_args)
    if quiet and fmt == "text" and not statistics:
        text = finding_lines(text)
    write_output(text, output_file, color=color or None)
