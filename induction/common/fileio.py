"""Atomic file writes: write a temporary sibling, then rename, so readers never see half a file;
and output targets (`output_file`): where a report or figure the user named really goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

_STD_STREAMS = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")
_MAX_LINKS = 40


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


class OutputError(ValueError):
    """An output path that cannot be written as asked (a directory, a socket, a link loop, a full
    device); one line naming the path."""


@dataclass(frozen=True)
class OutputTarget:
    """Where an output path leads: ``file`` (a regular file, or a new one: written atomically at
    `path`, the end of any chain of links), ``fd`` (an open file descriptor of this process: ``-``,
    /dev/stdout, /dev/fd/N) or ``stream`` (a character device or FIFO: written in place)."""

    kind: str
    path: Path
    fd: int | None = None


def output_target(path: str | os.PathLike[str]) -> OutputTarget:
    """Follow `path` through its links to what a write should reach (`OutputTarget`).

    A link is written through to its target, never replaced; a device node or FIFO is written in
    place, never replaced by a regular file; ``-``, /dev/stdout and /dev/fd/N (also behind links)
    are this process's open descriptors.

    Raises:
        OutputError: a directory, a socket, or a loop of links.
    """
    text = os.fspath(path)
    current = text
    for _ in range(_MAX_LINKS):
        if current in _STD_STREAMS:
            return OutputTarget("fd", Path(current), _STD_STREAMS[current])
        current = os.path.abspath(os.path.expanduser(current))
        if current in _STD_STREAMS:
            return OutputTarget("fd", Path(current), _STD_STREAMS[current])
        match = _FD_PATH.match(current)
        if match and (match.group(1) is None or int(match.group(1)) == os.getpid()):
            return OutputTarget("fd", Path(current), int(match.group(2)))
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return OutputTarget("file", Path(current))
        except OSError as exc:
            raise OutputError(f"{text}: cannot look at {current} ({exc.strerror})") from None
        if stat.S_ISLNK(info.st_mode):
            current = os.path.join(os.path.dirname(current), os.readlink(current))
            continue
        if stat.S_ISREG(info.st_mode):
            return OutputTarget("file", Path(current))
        if stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{text} is a directory; name a file")
        if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
            return OutputTarget("stream", Path(current))
        raise OutputError(f"{text} is a socket or block device; name a regular file, a character device or -")
    raise OutputError(f"{text}: too many levels of symbolic links")


@contextmanager
def output_file(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file to write an output into, then deliver it to where `path` leads
    (`output_target`): renamed atomically onto a regular file (the link's target, for a link), or
    copied into a descriptor, device or FIFO as it is (no rename: the node stays).

    Raises:
        OutputError: `path` cannot be written (one line naming it and the reason).
    """
    target = output_target(path)
    if target.kind == "file":
        with atomic_path(target.path, suffix=suffix) as tmp:
            yield tmp
        return
    fd, tmp_name = tempfile.mkstemp(prefix=".induction-out.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _deliver(tmp, target, os.fspath(path))
    finally:
        tmp.unlink(missing_ok=True)


def write_output(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` where `path` leads (`output_file`)."""
    with output_file(path) as tmp:
        tmp.write_text(text)


def _deliver(tmp: Path, target: OutputTarget, named: str) -> None:
    try:
        if target.kind == "fd":
            if target.fd in (1, 2):
                (sys.stdout if target.fd == 1 else sys.stderr).flush()
            with tmp.open("rb") as src:
                for chunk in iter(lambda: src.read(1 << 16), b""):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(target.fd, view):]
            return
        # A FIFO without a reader would block forever: open non-blocking (ENXIO), then write blocking.
        fd = os.open(target.path, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as dst, tmp.open("rb") as src:
            shutil.copyfileobj(src, dst)
    except OSError as exc:
        raise OutputError(f"cannot write {named}: {exc.strerror or exc}") from None
