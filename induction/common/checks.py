"""Validation rules every Config shares, so each error names the setting and what is allowed the same way."""

from __future__ import annotations

from typing import Any, Iterable


def check_choice(what: str, value: Any, allowed: Iterable[Any], error: type[Exception] = ValueError) -> None:
    """Raise `error` unless `value` is one of `allowed`: "unknown <what> 'x'; choose one of a, b"."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise error(f"unknown {what} {value!r}; choose one of {', '.join(str(a) for a in allowed)}")


def check_min(name: str, value: Any, minimum: int | float, error: type[Exception] = ValueError) -> None:
    """Raise `error` unless `value` is a number >= `minimum`: "<name> must be >= m, got v"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise error(f"{name} must be >= {minimum}, got {value!r}")


def check_range(name: str, value: Any, low: int | float, high: int | float, error: type[Exception] = ValueError) -> None:
    """Raise `error` unless low <= value <= high: "<name> must be in [low, high], got v"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise error(f"{name} must be in [{low}, {high}], got {value!r}")


class ResourceError(ValueError):
    """A request whose memory this machine does not have; the message says how much it needs."""


def available_memory(device: Any = "cpu") -> int:
    """Bytes a new allocation can take now: MemAvailable on the CPU, free memory on a CUDA device."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(what: str, nbytes: int | float, device: Any = "cpu") -> None:
    """Raise `ResourceError` (one line) when `what` needs more memory than `device` has available."""
    free = available_memory(device)
    if nbytes > free:
        raise ResourceError(f"{what} needs about {_gib(nbytes)} of memory, but only {_gib(free)} is available "
                            f"on {device}; use a smaller value")


def _gib(nbytes: int | float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"
