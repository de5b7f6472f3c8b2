"""Validation rules every Config shares, so each error names the setting and what is allowed the same way.

Errors speak of config fields, never of command-line flags: a `ConfigError` carries the field it is
about (`field`, the dataclass field's name), and only the CLI turns field names into its flags
(`induction.cli`), so a notebook user is told about the setting they did set.
"""

from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A setting that is not allowed, as one line; `field` names the config field it is about."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def config_error(message: str, field: str | None, error: type[Exception] = ConfigError) -> Exception:
    """`error(message)` that names its field (`.field`), whatever the exception type."""
    exc = error(message, field) if issubclass(error, ConfigError) else error(message)
    exc.field = field
    return exc


def check_choice(what: str, value: Any, allowed: Iterable[Any], error: type[Exception] = ConfigError,
                 field: str | None = None) -> None:
    """Raise `error` unless `value` is one of `allowed`: "unknown <what> 'x'; choose one of a, b"
    (`field`: the config field holding `value`, when `what` is a description rather than its name)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise config_error(f"unknown {what} {value!r}; choose one of {', '.join(str(a) for a in allowed)}",
                           field or what, error)


def check_min(name: str, value: Any, minimum: int | float, error: type[Exception] = ConfigError) -> None:
    """Raise `error` unless `value` is a number >= `minimum`: "<name> must be >= m, got v"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise config_error(f"{name} must be >= {minimum}, got {value!r}", name, error)


def check_range(name: str, value: Any, low: int | float, high: int | float, error: type[Exception] = ConfigError) -> None:
    """Raise `error` unless low <= value <= high: "<name> must be in [low, high], got v"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise config_error(f"{name} must be in [{low}, {high}], got {value!r}", name, error)


class ResourceError(ConfigError):
    """A request whose memory this machine does not have; the message says how much it needs and
    `field` which setting asks for it."""


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


def check_memory(what: str, nbytes: int | float, device: Any = "cpu", field: str | None = None) -> None:
    """Raise `ResourceError` (one line) when `what` needs more memory than `device` has available
    (`field`: the setting to lower; `what` reads "<field> = <value>")."""
    free = available_memory(device)
    if nbytes > free:
        raise ResourceError(f"{what} needs about {_gib(nbytes)} of memory, but only {_gib(free)} is available "
                            f"on {device}; use a smaller value", field)


def _gib(nbytes: int | float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"
