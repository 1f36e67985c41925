"""Stable fingerprints of findings, for tools that follow a finding from one run to the next
(SARIF ``partialFingerprints`` for code scanning, the GitLab Code Quality ``fingerprint``).

A fingerprint hashes what a finding is, not where it is: the rule, the file (relative to the
project root), the text of its source line with whitespace removed (or the message when the line
cannot be read), the runtime module, and how many identical findings came before it in the file.
Code moved up or down keeps its fingerprints; a changed line gets a new one."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterable

from torch_audit.findings import Finding
from torch_audit.paths import repo_relative_posix
from torch_audit.report._frames import SourceLines

_SPACE = re.compile(r"\s+")


def fingerprints(
    findings: Iterable[Finding], root: str | os.PathLike[str], source: SourceLines | None = None
) -> list[str]:
    """One 16-hex-digit fingerprint per finding, in the order given (call it with the findings
    ordered, so that the occurrence counts are stable)."""
    import hashlib  # here, not at the top: the text formats never need it (start-up time)

    source = source or SourceLines()
    seen: Counter[str] = Counter()
    out = []
    for f in findings:
        path = (repo_relative_posix(f.path, root) or f.path) if f.path else ""
        line = source.line(f) if f.path else None
        text = _SPACE.sub("", line) if line is not None else f.message
        key = "\0".join([f.code, path, str(f.cell or ""), f.module or "", text])
        seen[key] += 1
        digest = hashlib.sha256(f"{key}\0{seen[key]}".encode("utf-8", "surrogateescape")).hexdigest()
        out.append(digest[:16])
    return out
