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
        for needle, meaning in _MEANINGS:
            if needle in line:
                return meaning
        return type(exc).__name__
    return line


_MEANINGS = (  # what transformers' pointer-only errors mean, said here since the report they point at is not shown
    ("ignore_mismatched_sizes", "a tensor in the weights files does not have the shape config.json implies"),
    ("conversion", "the weights could not be converted to this model's layout (a tensor of an unexpected shape or name)"),
)
