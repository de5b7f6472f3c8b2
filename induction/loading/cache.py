"""The per-checkpoint result cache of `induction track`: one JSON file per checkpoint.

    <dir>/settings.json          what every result here depends on (scoring settings, code hash)
    <dir>/<checkpoint name>.json {"identity": {...}, "result": {...}}

`<dir>` is named by a hash of the settings, so changed settings or changed scoring code never mix
with old results; each entry records its checkpoint's identity (a hash of its weights, or its
revision), so a retrained checkpoint is rescored. Every file is written atomically, so an
interrupted track leaves whole entries only and a rerun recomputes nothing already done.

An entry is trusted only if it is intact: its identity matches, its result hashes to the
`result_sha256` stored beside it (an edited or truncated entry does not), and the caller's
`validate` accepts it (the schema: every head, finite numbers). Anything else is recomputed and
overwritten.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from induction.common.fileio import write_json_atomic


class ResultCache:
    """Cached results under `directory` (see module docstring); `None` disables caching."""

    def __init__(self, directory: Path | None, settings: dict[str, Any] | None = None,
                 validate: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.directory = directory
        self.validate = validate
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
        if not isinstance(cached, dict) or cached.get("identity") != identity:
            return None
        result = cached.get("result")
        if not isinstance(result, dict) or cached.get("result_sha256") != result_hash(result):
            return None
        if self.validate is not None and not self.validate(result):
            return None
        return result

    def write(self, name: str, identity: dict[str, Any], result: dict[str, Any]) -> None:
        path = self.path(name)
        if path is not None:
            write_json_atomic(path, {"identity": identity, "result": result, "result_sha256": result_hash(result)})


def result_hash(result: dict[str, Any]) -> str:
    """sha256 of a result's canonical JSON (sorted keys), as it is stored and read back."""
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def code_hash(modules: Sequence[str]) -> str:
    """A hash of the code of `modules` (dotted names, found without importing them), so a changed definition invalidates cached results instead of
    mixing with them. It hashes each module's syntax tree without docstrings: edits to comments and
    docstrings, and moving a module, keep the cache; any change to what runs does not."""
    digest = hashlib.sha256()
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no module {module!r} to hash")
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree, annotate_fields=False).encode())
    return digest.hexdigest()[:16]
