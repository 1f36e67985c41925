"""The ``junit`` format: JUnit XML, as CI systems read test results (one ``testsuite`` per file,
one failing ``testcase`` per finding; a run without findings is one passing test case), the
shape Ruff's ``junit`` format has."""

from __future__ import annotations

import re
from collections import defaultdict
from xml.etree import ElementTree as ET

from torch_audit.findings import Finding
from torch_audit.paths import display_path
from torch_audit.report._order import ordered
from torch_audit.report._text import runtime_suffix

# XML 1.0 cannot carry most control characters, even escaped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text.encode("utf-8", "replace").decode("utf-8"))


def render_junit(findings: list[Finding], *, tool_name: str = "torch-audit") -> str:
    findings = ordered(findings)
    suites = ET.Element("testsuites", name=tool_name, tests=str(max(1, len(findings))),
                        failures=str(len(findings)), errors="0")
    if not findings:
        suite = ET.SubElement(suites, "testsuite", name=tool_name, tests="1", failures="0", errors="0")
        ET.SubElement(suite, "testcase", name="No findings", classname=tool_name)
    by_path: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_path[display_path(f.path) if f.path else "(runtime)"].append(f)
    for path, items in by_path.items():
        suite = ET.SubElement(suites, "testsuite", name=_clean(path), tests=str(len(items)),
                              failures=str(len(items)), errors="0")
        for f in items:
            where = f"cell {f.cell}, line {f.line}" if f.cell is not None else f"line {f.line}"
            case = ET.SubElement(suite, "testcase", name=f"{tool_name}.{f.code}", classname=_clean(path),
                                 file=_clean(path), line=str(f.line))
            message = _clean(f"{f.message}{runtime_suffix(f)}")
            failure = ET.SubElement(case, "failure", message=message, type=f.severity.value)
            body = f"{where}, col {f.column}: {f.code} {f.name}: {message}"
            if f.help:
                body += f"\nhelp: {_clean(f.help)}"
            failure.text = body
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
