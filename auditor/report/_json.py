"""The ``json`` format: a list of ``Finding.to_dict()`` objects in a stable order."""

from __future__ import annotations

import json

from torch_audit.findings import Finding
from torch_audit.report._common import finding_dict, ordered


def render_json(findings: list[Finding]) -> str:
    data = [finding_dict(f) for f in ordered(findings)]
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render_json_statistics(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
