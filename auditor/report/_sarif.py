"""The ``sarif`` format: SARIF 2.1.0 for GitHub code scanning and other SARIF viewers.

Locations are repository-relative (relative to ``root``, ``uriBaseId`` ``%SRCROOT%``); a file
outside ``root`` gets an absolute ``file://`` URI. Columns count Unicode code points, as the
findings do, and ``endColumn`` is exclusive, as in SARIF."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import quote

from torch_audit.findings import Applicability, Finding, Severity
from torch_audit.paths import absolute_uri, repo_relative_posix
from torch_audit.report._fingerprint import fingerprints
from torch_audit.report._json import json_safe
from torch_audit.report._order import is_runtime, ordered

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/torch-audit/torch-audit"
#: A rule's page, generated from the catalogue into docs/rules/ (python -m torch_audit.docs
#: --update-rule-pages docs/rules) and kept current by tests/test_meta.py.
RULE_PAGE_URI = INFORMATION_URI + "/blob/main/docs/rules/{name}.md"
#: The key of our own fingerprint in ``partialFingerprints`` (versioned: a new recipe, a new key).
FINGERPRINT_KEY = "torchAudit/v1"
SRCROOT = "%SRCROOT%"

LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
# GitHub code scanning reads `problem.severity` for non-security alerts.
PROBLEM_SEVERITY = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "recommendation"}


def _text(value: str) -> dict[str, str]:
    return {"text": value}


def _humanize(name: str) -> str:
    words = name.replace("-", " ").replace("_", " ").strip()
    return (words[:1].upper() + words[1:]) if words else name


def _help(sections: dict[str, str], fix_title: str | None = None) -> dict[str, str]:
    if fix_title:  # "How to fix" after what is wrong and why (placeholders shown as <name>)
        from torch_audit.rule import readable_fix_title

        items = list(sections.items())
        at = next((i for i, (t, _) in enumerate(items) if t not in ("What it does", "Why is this bad?")), len(items))
        items.insert(at, ("How to fix", readable_fix_title(fix_title)))
        sections = dict(items)
    plain = "\n\n".join(f"{title}\n{body}" for title, body in sections.items() if body)
    markdown = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections.items() if body)
    return {"text": plain, "markdown": markdown}


def rule_descriptor(code: str, rule: Any | None, example: Finding) -> dict[str, Any]:
    """A ``reportingDescriptor`` for ``code``: from the catalogue's rule when there is one,
    otherwise (engine codes such as ``syntax-error``) from a finding carrying the code."""
    if rule is None:
        short = _humanize(example.name) or code
        return {
            "id": code,
            "name": example.name or code,
            "shortDescription": _text(short),
            "fullDescription": _text(short),
            "defaultConfiguration": {"level": LEVEL[example.severity]},
            "properties": {
                "tags": ["torch-audit"],
                "precision": "very-high",
                "problem.severity": PROBLEM_SEVERITY[example.severity],
            },
        }
    severity = Severity.parse(rule.severity)
    sections = rule.doc_sections()
    summary = rule.summary() or _humanize(rule.name)
    full = re.sub(r"\s*\n\s*", " ", sections.get("What it does", "")).strip() or summary
    tags = ["torch-audit", getattr(rule, "kind", "static")]
    tags += [t for t in getattr(rule, "tags", ()) if t not in tags]
    if getattr(rule, "status", "stable") == "preview":
        tags.append("preview")
    precision = getattr(rule, "precision", None) or (
        "medium" if getattr(rule, "status", "stable") == "preview" else "high"
    )
    descriptor: dict[str, Any] = {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": _text(summary),
        "fullDescription": _text(full),
        "helpUri": RULE_PAGE_URI.format(name=rule.name),
    }
    help_ = _help(sections, getattr(rule, "fix_title", None))
    if help_["text"]:
        descriptor["help"] = help_
    descriptor["defaultConfiguration"] = {"level": LEVEL[severity]}
    descriptor["properties"] = {
        "tags": tags,
        "precision": precision,
        "problem.severity": PROBLEM_SEVERITY[severity],
    }
    return descriptor


def _artifact_location(path: str, root: str | os.PathLike[str]) -> dict[str, str]:
    rel = repo_relative_posix(path, root)
    if rel is None:
        return {"uri": absolute_uri(path)}
    return {"uri": quote(os.fsencode(rel), safe="/"), "uriBaseId": SRCROOT}  # bytes: \xff -> %FF


def _region(line: int, column: int, end_line: int | None, end_column: int | None) -> dict[str, int]:
    start_line = max(1, line)
    start_column = max(1, column)
    stop_line = max(start_line, end_line or start_line)
    stop_column = max(1, end_column or start_column)
    if stop_line == start_line:
        stop_column = max(stop_column, start_column)
    return {
        "startLine": start_line,
        "startColumn": start_column,
        "endLine": stop_line,
        "endColumn": stop_column,
    }


def _fix(finding: Finding, location: dict[str, str]) -> dict[str, Any] | None:
    fix = finding.fix
    if fix is None or not fix.edits:
        return None
    description = fix.description
    if fix.applicability == Applicability.UNSAFE:
        description += " (unsafe fix)"
    return {
        "description": _text(description),
        "artifactChanges": [
            {
                "artifactLocation": dict(location),
                "replacements": [
                    {
                        "deletedRegion": _region(e.start_line, e.start_column, e.end_line, e.end_column),
                        "insertedContent": _text(e.content),
                    }
                    for e in sorted(fix.edits, key=lambda e: (e.start_line, e.start_column))
                ],
            }
        ],
        "properties": {"applicability": fix.applicability.value},
    }


def _result(finding: Finding, rule_index: int, root: str | os.PathLike[str], fingerprint: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": rule_index,
        "level": LEVEL[finding.severity],
        "message": _text(finding.message),
        "partialFingerprints": {FINGERPRINT_KEY: fingerprint},
    }
    # The finding's own properties (a SARIF property bag): notebook cell, runtime measurements
    # and `help`, what to do about this finding (the rule's fix title with its names filled in;
    # the rule's `help` carries the generic one).
    properties: dict[str, Any] = {}
    if finding.path:
        location = _artifact_location(finding.path, root)
        region = _region(finding.line, finding.column, finding.end_line, finding.end_column)
        if finding.cell is not None:  # a notebook: point into the .ipynb file itself
            if finding.raw_region is not None:
                region = _region(*finding.raw_region)
            properties.update(cell=finding.cell, cellLine=finding.line, cellColumn=finding.column)
        result["locations"] = [
            {
                "physicalLocation": {
                    "artifactLocation": location,
                    "region": region,
                }
            }
        ]
        fix = _fix(finding, location) if finding.cell is None else None
        if fix is not None:
            result["fixes"] = [fix]
    if finding.related:
        # the evidence in other files (the softmax a loss receives, the call site it rests on)
        result["relatedLocations"] = [
            {
                "id": i,
                "physicalLocation": {
                    "artifactLocation": _artifact_location(path, root),
                    "region": {"startLine": max(1, line)},
                },
                "message": _text(what),
            }
            for i, (path, line, what) in enumerate(finding.related)
        ]
    if is_runtime(finding):
        extras = {
            key: value
            for key, value in (
                ("module", finding.module),
                ("step", finding.step),
                ("count", finding.count),
                ("value", finding.value),
                ("rank", finding.rank),
            )
            if value is not None
        }
        properties.update(json_safe(extras))
    if finding.help:
        properties["help"] = finding.help
    if properties:
        result["properties"] = properties
    return result


def _lookup(catalog: Any | None, code: str) -> Any | None:
    if catalog is None:
        return None
    rule = catalog.get(code)
    return rule if rule is not None and rule.code == code else None


def sarif_log(
    findings: list[Finding],
    *,
    catalog: Any | None = None,
    root: str | os.PathLike[str] = ".",
    tool_name: str = "torch-audit",
) -> dict[str, Any]:
    """The SARIF log as a dict (``render`` serialises it)."""
    from torch_audit import __version__

    findings = ordered(findings)
    examples: dict[str, Finding] = {}
    for f in findings:
        examples.setdefault(f.code, f)
    codes = sorted(examples)
    index = {code: i for i, code in enumerate(codes)}
    rules = [
        rule_descriptor(code, _lookup(catalog, code), examples[code])
        for code in codes
    ]
    driver: dict[str, Any] = {
        "name": tool_name,
        "version": __version__,
        "semanticVersion": __version__,
        "informationUri": INFORMATION_URI,
        "rules": rules,
    }
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+].*)?", __version__):
        del driver["semanticVersion"]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {"driver": driver},
                "columnKind": "unicodeCodePoints",
                "results": [
                    _result(f, index[f.code], root, fp) for f, fp in zip(findings, fingerprints(findings, root))
                ],
            }
        ],
    }


def render_sarif(findings: list[Finding], **kwargs: Any) -> str:
    return json.dumps(sarif_log(findings, **kwargs), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
