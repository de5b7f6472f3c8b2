"""The per-checkpoint result cache of `induction track`: one JSON file per checkpoint.

    <dir>/settings.json          what every result here depends on (scoring settings, code hash)
    <dir>/<checkpoint name>.json {"identity": {...}, "result": {...}}

`<dir>` is named by a hash of the settings, so changed settings or changed scoring code never mix
with old results; each entry records its checkpoint's identity (a hash of its weights, or its
revision), so a retrained checkpoint is rescored. Every file is written atomically, so an
interrupted track leaves whole entries only and a rerun recomputes nothing already done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from induction.fileio import write_json_atomic


class ResultCache:
    """Cached results under `directory` (see module docstring); `None` disables caching."""

    def __init__(self, directory: Path | None, settings: dict[str, Any] | None = None) -> None:
        self.directory = directory
        if directory is not None and settings is not None:
            write_json_atomic(directory / "settings.json", settings)

    def path(self, name: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{name}.json"

    def read(self, name: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The cached result for this identity, or None (missing, unreadable or stale: recompute)."""
        path = self.path(name)
        if path is None or not path.exists():
            return None
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(cached, dict) or cached.get("identity") != identity or not isinstance(cached.get("result"), dict):
            return None
        return cached["result"]

    def write(self, name: str, identity: dict[str, Any], result: dict[str, Any]) -> None:
        path = self.path(name)
        if path is not None:
            write_json_atomic(path, {"identity": identity, "result": result})
