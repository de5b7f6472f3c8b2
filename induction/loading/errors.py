"""The loading stage's error type and its one-line message rule."""

from __future__ import annotations

# Third-party messages that only point at text printed elsewhere (transformers' load report, a
# safetensors panic): alone they tell the user nothing, so `one_line` replaces them.
_POINTERS = ("look at the above report", "see above", "check the logs above")


class ModelLoadError(ValueError):
    """A model spec that cannot be loaded; the message names the problem in one line."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message; its type where the message is empty or only points
    at a report printed elsewhere ("look at the above report!")."""
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else ""
    if not line or any(p in line.lower() for p in _POINTERS):
        kept = line.split(":", 1)[0].strip() if ":" in line else ""
        return f"{type(exc).__name__}{': ' + kept if kept and not any(p in kept.lower() for p in _POINTERS) else ''}"
    return line
