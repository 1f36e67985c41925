"""The ``gitlab`` format: a GitLab Code Quality report (a JSON list of issues, a subset of the
Code Climate spec), for ``artifacts: reports: codequality``.

See https://docs.gitlab.com/ci/testing/code_quality/#code-quality-report-format. Paths are
relative to the repository: ``CI_PROJECT_DIR`` when GitLab sets it, else the project root."""

from __future__ import annotations

import json
import os
from typing import Any

from torch_audit.findings import Finding, Severity
from torch_audit.paths import repo_relative_posix
from torch_audit.report._order import ordered
from torch_audit.report._fingerprint import fingerprints
from torch_audit.report._text import runtime_suffix

SEVERITY = {Severity.ERROR: "major", Severity.WARNING: "minor", Severity.INFO: "info"}


def _issue(finding: Finding, fingerprint: str, root: str | os.PathLike[str]) -> dict[str, Any]:
    begin, end = finding.line, finding.end_line or finding.line
    if finding.raw_region is not None:  # a notebook: the line of the .ipynb file
        begin, end = finding.raw_region[0], finding.raw_region[2]
    path = (repo_relative_posix(finding.path, root) or finding.path) if finding.path else ""
    return {
        "type": "issue",
        "check_name": finding.code,
        "description": f"{finding.code} {finding.message}{runtime_suffix(finding)}",
        "content": {"body": finding.help} if finding.help else {"body": finding.name},
        "categories": ["Bug Risk"],
        "severity": SEVERITY[finding.severity],
        "fingerprint": fingerprint,
        "location": {"path": path, "lines": {"begin": max(1, begin), "end": max(1, begin, end)}},
    }


def render_gitlab(findings: list[Finding], *, root: str | os.PathLike[str] = ".") -> str:
    root = os.environ.get("CI_PROJECT_DIR") or root
    findings = ordered(findings)
    issues = [_issue(f, fp, root) for f, fp in zip(findings, fingerprints(findings, root))]
    return json.dumps(issues, indent=2, ensure_ascii=False) + "\n"
