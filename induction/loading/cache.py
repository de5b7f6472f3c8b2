"""The per-checkpoint result cache of `induction track`: one JSON file per checkpoint.

    <dir>/settings.json          what every result here depends on (scoring settings, code hash)
    <dir>/<checkpoint name>.json {"identity": {...}, "libraries": {...}, "result": {...}, "result_sha256": ...}

`<dir>` is named by a hash of the settings, so changed settings or changed scoring code never mix
with old results; each entry records its checkpoint's identity (`checkpoint_identity`: a hash of its
weights and of its config.json, and the grid of heads its config says; or its revision), so a
retrained or reconfigured checkpoint is rescored, and the versions of the libraries that compute
them (`libraries`). Every file is written atomically, so an
interrupted track leaves whole entries only and a rerun recomputes nothing already done.

A cache entry proves itself or is recomputed: it must be a regular file (a FIFO, a device, a link or
a folder in its place is never opened for reading), at most `MAX_ENTRY_BYTES`, valid JSON, its
identity the checkpoint's, its result hashing to the `result_sha256` stored beside it, its heads
exactly the (layer, head) grid of the checkpoint's config (an entry with a layer removed or one
added fails, whatever its hash), and accepted by the caller's `validate` (the schema: finite
numbers). Anything else is ignored with a note (a warning on the ``induction.cache`` logger, which
the CLI prints as one line) and recomputed; a cache that cannot be written is a note too, never a
failure: no state of the cache folder can make a run fail.
"""

from __future__ import annotations

import ast
import errno
import functools
import hashlib
import importlib.util
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Sequence

from induction.common.fileio import file_sha256, write_json_atomic

MAX_ENTRY_BYTES = 64 * 2**20  # far above any real entry (a few hundred KB for 1000 heads)
log = logging.getLogger("induction.cache")


def note(message: str) -> None:
    """A cache problem the run works around (module docstring): one line, never an error (the CLI
    prints the ``induction`` loggers' warnings on stderr as they are)."""
    log.warning("induction: note: %s", message)


class ResultCache:
    """Cached results under `directory` (see module docstring); `None` disables caching."""

    def __init__(self, directory: Path | None, settings: dict[str, Any] | None = None,
                 validate: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.directory = directory
        self.validate = validate
        if directory is not None and settings is not None:
            self._write(directory / "settings.json", settings)

    def path(self, name: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{name}.json"

    def read(self, name: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The cached result for this identity, or None (missing, unreadable, stale or not proven:
        recompute)."""
        path = self.path(name)
        if path is None:
            return None
        cached = read_entry(path)
        if not isinstance(cached, dict) or cached.get("identity") != identity or cached.get("libraries") != libraries():
            return None
        result = cached.get("result")
        if not isinstance(result, dict) or cached.get("result_sha256") != result_hash(result):
            note(f"cache entry {path} was edited or cut short; recomputing it")
            return None
        if "grid" in identity and not fits_grid(result, identity["grid"]):
            note(f"cache entry {path} does not have the checkpoint's {identity['grid'][0]} layer(s) x "
                 f"{identity['grid'][1]} head(s); recomputing it")
            return None
        if self.validate is not None and not self.validate(result):
            note(f"cache entry {path} is incomplete or holds non-finite numbers; recomputing it")
            return None
        return result

    def write(self, name: str, identity: dict[str, Any], result: dict[str, Any]) -> None:
        path = self.path(name)
        if path is not None:
            self._write(path, {"identity": identity, "libraries": libraries(), "result": result,
                               "result_sha256": result_hash(result)})

    @staticmethod
    def _write(path: Path, obj: dict[str, Any]) -> None:
        try:  # a link, FIFO or device in the entry's place is replaced by the entry (the rename)
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a directory is in its place")
            write_json_atomic(path, obj)
        except OSError as exc:
            note(f"cannot write cache file {path} ({exc.strerror or exc}); the result is not cached")


def read_entry(path: Path) -> Any:
    """A cache file's JSON, or None (with a note) when it is not a readable regular file of at most
    `MAX_ENTRY_BYTES` holding JSON. Never blocks: the file is checked before it is opened, and opened
    non-blocking without following links."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        note(f"cache entry {path} is unreadable ({exc.strerror}); recomputing it")
        return None
    if not stat.S_ISREG(info.st_mode):
        note(f"cache entry {path} is not a regular file; ignoring it and recomputing")
        return None
    if info.st_size > MAX_ENTRY_BYTES:
        note(f"cache entry {path} is larger than {MAX_ENTRY_BYTES >> 20} MiB; ignoring it and recomputing")
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped since the lstat
                return None
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            return None
        return json.loads(data)
    except (OSError, ValueError) as exc:
        note(f"cache entry {path} is unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__}); recomputing it")
        return None


def fits_grid(result: dict[str, Any], grid: list[int]) -> bool:
    """Whether a result's heads are exactly the (layer, head) cells of an `n_layers` x `n_heads`
    grid (a per-head result) and every head it names (``heads``, ``control_heads`` of a head-set
    result) is inside it."""
    n_layers, n_heads = grid
    cells = {(layer, head) for layer in range(n_layers) for head in range(n_heads)}
    heads = result.get("heads")
    try:
        if isinstance(heads, list) and heads and all(isinstance(h, dict) for h in heads):
            named = [(h["layer"], h["head"]) for h in heads]
            return len(named) == len(cells) and set(named) == cells
        pairs = list(heads or []) + [p for group in result.get("control_heads") or [] for p in group]
        return all(tuple(p) in cells for p in pairs)
    except (KeyError, TypeError):
        return False


@functools.lru_cache(maxsize=1)
def libraries() -> dict[str, str | None]:
    """The versions of the libraries a result's numbers depend on (the toolkit's own scoring code is
    in the settings' code hash): an entry computed under others is recomputed."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("torch", "transformers", "transformer-lens", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
def checkpoint_identity(weights: str, config_file: Path) -> dict[str, Any]:
    """What a checkpoint's cached result must match: its weights' hash, its config.json's hash (a
    changed `attn_scale` changes every number), and the (layer, head) grid the config says, which
    the cached heads must fill exactly. A config that cannot be read gets no grid: loading it fails
    and says why."""
    identity: dict[str, Any] = {"weights_sha256": weights}
    try:
        identity["config_sha256"] = file_sha256(config_file)
    except OSError:
        identity["config_sha256"] = None
    grid = config_grid(config_file)
    if grid is not None:
        identity["grid"] = grid
    return identity


def config_grid(config_file: Path) -> list[int] | None:
    """[n_layers, n_heads] of a native or Hugging Face config.json, or None when it does not say."""
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    if "model_type" not in config:
        grid = [config.get("n_layers"), config.get("n_heads")]
    else:
        try:
            import warnings

            from transformers import AutoConfig

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf = AutoConfig.from_pretrained(str(config_file.parent))
            grid = [getattr(hf, "num_hidden_layers", None), getattr(hf, "num_attention_heads", None)]
        except Exception:  # loading the checkpoint says what is wrong with its config
            return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid)
    return grid if ok else None
