"""The ``json`` format: a list of ``Finding.to_dict()`` objects in a stable order."""

from __future__ import annotations

import json
import math
from typing import Any

from torch_audit.findings import Finding
from torch_audit.report._order import root_cause_first


def render_json(findings: list[Finding]) -> str:
    data = [finding_dict(f) for f in root_cause_first(findings)]
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_json_statistics(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity; spell them as strings (``"nan"``, ``"inf"``, ``"-inf"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def finding_dict(finding: Finding) -> dict[str, Any]:
    return json_safe(finding.to_dict())


def escape_surrogates_in_json(text: str) -> str:
    """JSON text made by ``json.dumps(..., ensure_ascii=False)`` with any lone surrogate (an
    undecodable byte of a file name) written as its ``\\udcXX`` escape: valid UTF-8 and valid
    JSON, and ``os.fsencode`` of the decoded string gives the name's bytes back. (A surrogate can
    only occur inside a JSON string, where the escape is legal.)"""
    if text.isascii():
        return text
    import re

    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)
