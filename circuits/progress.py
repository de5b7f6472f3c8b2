"""Progress that reads well: a bar on a terminal (or in Jupyter), one line per stage in a log.

A tqdm bar redraws itself with carriage returns; written to a file or a pipe, every redraw lands in
the log, so a 41-step bar becomes one long line of 41 copies. `progress_bar` therefore draws a bar
only where someone watches it (stderr is a terminal, or a Jupyter kernel, where tqdm draws a
widget). Anywhere else a *stage* (the outer loop of a job: training, tracking the checkpoints) writes
one line when it ends, ``tracking: 41 checkpoints, done in 12.3 s``; a stage inside another (the
batches of each checkpoint's scan while tracking) and a stage that fails write nothing. Library code passes `enabled=False` (its caller's
``progress=False``) to stay silent everywhere.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator


def interactive(stream: Any = None) -> bool:
    """Whether a progress bar on `stream` (default: stderr) is seen as it redraws: a terminal or a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False
    shell = sys.modules.get("IPython")
    try:
        kernel = shell is not None and shell.get_ipython() is not None and "IPKernelApp" in shell.get_ipython().config
    except Exception:  # an IPython without a running shell
        kernel = False
    return bool(kernel)


_open_stages = 0  # StageLines not yet closed: a stage inside one of them stays silent


class StageLine:
    """What a stage shows where no bar is drawn: one line on `file` when it ends (tqdm's API, the parts used here)."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
                 initial: int = 0, unit: str = "it", file: Any = None, **_: Any) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.n = initial
        self.start_n = initial
        self.unit = unit
        self.file = file
        self.postfix = ""
        self.started = time.perf_counter()
        self.closed = False
        global _open_stages
        _open_stages += 1

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:  # also when the loop is left early or fails (then `close` says nothing)
            self.close()

    def __enter__(self) -> "StageLine":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        global _open_stages
        _open_stages -= 1
        if sys.exc_info()[0] is not None:  # closed while an error propagates: the error is the line that matters
            return
        print(self.line(), file=self.file if self.file is not None else sys.stderr, flush=True)

    def line(self) -> str:
        """``tracking: 41 checkpoints, done in 12.3 s`` (no count for tqdm's unnamed unit "it")."""
        done = self.n - self.start_n
        if self.unit == "it":
            count = ""
        elif self.total is not None and self.n != self.total:
            count = f"{self.n} of {self.total} {self.unit}s, "
        else:
            plural = "" if self.unit.endswith("s") or done == 1 else "s"
            count = f"{done} {self.unit}{plural}" + (f" (from {self.start_n})" if self.start_n else "") + ", "
        extra = f"{self.postfix}, " if self.postfix else ""
        return f"{self.desc}: {count}{extra}done in {time.perf_counter() - self.started:.1f} s"


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, enabled: bool = True, stage: bool = False,
                 **kwargs: Any):
    """A tqdm bar where someone watches stderr, else a `StageLine` (`stage=True`) or nothing.

    Args:
        iterable: what to iterate over (or None, and call `update`).
        desc: the stage's name, e.g. "tracking".
        enabled: False for no output at all (the caller's ``progress=False``).
        stage: an outer loop worth one line in a log; inner loops (batches) write nothing there.
        **kwargs: tqdm's keywords (total, unit, initial, leave, ...).
    """
    from tqdm.auto import tqdm

    file = kwargs.pop("file", sys.stderr)
    if enabled and interactive(file):
        return tqdm(iterable, desc=desc, file=file, **kwargs)
    if enabled and stage and not _open_stages:
        return StageLine(iterable, desc=desc, file=file, **kwargs)
    return tqdm(iterable, desc=desc, disable=True, **kwargs)
