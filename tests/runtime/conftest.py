from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "runtime"
#: Every default and preview runtime check; a fixture folder of an opt-in check adds that check.
ALL_CHECKS = ["ALL"]


def fixture_dirs() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def expected_codes(path: Path) -> set[str]:
    codes: set[str] = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*#\s*expect:\s*(.*)$", line)
        if m:
            codes.update(re.findall(r"TA\d{3}", m.group(1)))
    return codes


def run_fixture(path: Path, **kwargs):
    import torch_audit

    if "select" not in kwargs:
        from torch_audit.catalog import load_catalog, slug_of

        own = [r.code for r in load_catalog().of_kind("runtime") if slug_of(r) == path.parent.name]
        kwargs["select"] = ALL_CHECKS + own
    kwargs.setdefault("preview", True)
    with torch_audit.audit(**kwargs) as session:
        runpy.run_path(str(path), run_name="__main__")
    return session


@pytest.fixture(autouse=True)
def _no_leftover_session():
    from torch_audit.runtime.session import active_session

    assert active_session() is None
    yield
    assert active_session() is None
