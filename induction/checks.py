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
