"""Content-hash result cache in ``.torch_audit_cache/``.

One JSON file per (settings, content) pair, written atomically (temporary file + rename), so
concurrent runs in the same directory never see half an entry. A truncated or garbage entry is
ignored and rewritten. The settings fingerprint covers the tool version, the configuration and the
enabled rules, so changing any of them starts from an empty cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_DIR_NAME = ".torch_audit_cache"
_README = "Cache of torch-audit lint results. Safe to delete.\n"


class Cache:
    def __init__(self, root: Path, fingerprint: str) -> None:
        self.base = root / CACHE_DIR_NAME
        self.dir = self.base / fingerprint
        self._ready = False

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=20).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(key), "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
            return None
        return data

    def put(self, key: str, value: dict[str, Any]) -> None:
        target = self._path(key)
        try:
            if not self._ready:
                self.base.mkdir(exist_ok=True)
                (self.base / ".gitignore").write_text("*\n")
                (self.base / "README").write_text(_README)
                self._ready = True
            target.parent.mkdir(parents=True, exist_ok=True)
            import tempfile  # on the first write only: a warm-cache run never needs it (~5 ms)

            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(value, fh, separators=(",", ":"))
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError:
            pass  # a read-only tree or a full disk only costs speed
