"""Atomic file writes: write a temporary sibling, then rename, so readers never see half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: str | os.PathLike[str], directory: bool = False) -> None:
    """chmod `path` to what the user's umask gives a new file (or directory): temp-file helpers and
    some writers (safetensors) create 0600 files, which other users of a shared run could not read."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        give_default_mode(tmp)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON to `path` atomically (creating the parent directory)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_default(obj: Any) -> Any:
    """JSON for tensors/numpy scalars and arrays, dtypes and paths."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if type(obj).__name__ == "dtype":  # torch.dtype / numpy.dtype
        return str(obj).replace("torch.", "")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def induction_cache() -> Path:
    """The toolkit's own cache folder: ``$INDUCTION_CACHE``, else ``~/.cache/induction``."""
    return Path(os.environ.get("INDUCTION_CACHE") or Path.home() / ".cache" / "induction")
