"""The ``github`` format: GitHub Actions workflow commands that become annotations.

See https://docs.github.com/actions/reference/workflow-commands-for-github-actions; the escaping
follows the Actions toolkit (``@actions/core`` ``command.ts``). GitHub matches an annotation's
``file`` against the repository, so paths are relative to ``GITHUB_WORKSPACE`` (the checkout)
when it is set, whatever the current directory; else to the current directory."""

from __future__ import annotations

from torch_audit.findings import Finding, Severity
import os

from torch_audit.paths import display_path, printable, repo_relative_posix
from torch_audit.report._order import ordered
from torch_audit.report._text import runtime_suffix

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation_path(path: str) -> str:
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if workspace:
        rel = repo_relative_posix(path, workspace)
        if rel is not None:
            return printable(rel)
    return display_path(path)


def annotation(finding: Finding) -> str:
    props: list[tuple[str, object]] = []
    if finding.path:
        region = (finding.line, finding.column, finding.end_line, finding.end_column)
        if finding.raw_region is not None:  # a notebook: annotate the line of the .ipynb file
            region = finding.raw_region
        props += [
            ("file", annotation_path(finding.path)),
            ("line", region[0]),
            ("col", region[1]),
            ("endLine", region[2]),
            ("endColumn", region[3]),
        ]
    props.append(("title", f"{finding.code} {finding.name}"))
    rendered = ",".join(f"{key}={escape_property(str(value))}" for key, value in props)
    message = finding.message + runtime_suffix(finding)
    if finding.help:  # a second line of the annotation (escaped: still one workflow command)
        message += f"\nhelp: {finding.help}"
    return f"::{COMMAND[finding.severity]} {rendered}::{escape_data(message)}"


def render_github(findings: list[Finding]) -> str:
    return "".join(annotation(f) + "\n" for f in ordered(findings))
