"""Per-source checkpoints: small JSON files written atomically after the bus has acknowledged."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class CheckpointStore:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._dir / (_SAFE_RE.sub("_", key)[:150] + ".json")

    def load(self, key: str) -> dict[str, Any]:
        path = self._path(key)
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def save(self, key: str, state: dict[str, Any]) -> None:
        path = self._path(key)
        temporary = path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
