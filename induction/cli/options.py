"""Options generated from a Config: each takes its default from the dataclass and its help from the
field's entry in the class docstring ("Attributes:"), so the CLI restates neither. A Config is named
by a "module:Class" reference and read from source (`induction.cli.static`), so building the parser
imports nothing heavy; the job later builds the real Config from the parsed values.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from typing import Any, Callable, Mapping

from induction.cli import static

Flags = Mapping[str, "str | tuple[str, dict[str, Any]]"]
"""field name -> flag, or (flag, extra `add_argument` keywords such as `type`, `choices`, `metavar`)."""


def config_default(cls: type | str, name: str) -> Any:
    """The default of dataclass `cls`'s field `name` (what an option left out means); `cls` may be a
    class or a "module:Class" reference, read from source without importing it (`induction.cli.static`)."""
    if isinstance(cls, str):
        fields = static.fields(cls)
        if name not in fields:
            raise KeyError(f"{cls} has no field {name}")
        value = fields[name].default
        if value is static.MISSING or value is static.OPAQUE:
            raise KeyError(f"{cls}.{name} has no default that can be read from source")
        return value
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name}")


def field_docs(cls: type | str) -> dict[str, str]:
    """Each field's description in `cls`'s Google-style docstring ("Attributes:" section), first sentence."""
    if isinstance(cls, str):
        return {name: f.doc for name, f in static.fields(cls).items() if f.doc}
    return static.attribute_docs(inspect.getdoc(cls) or "")


def _scalar_type(cls: type | str, name: str) -> Callable[[str], Any]:
    if isinstance(cls, str):
        annotation = static.fields(cls)[name].annotation
    else:
        annotation = str(next(f.type for f in dataclasses.fields(cls) if f.name == name))
    for text, kind in (("bool", str), ("int", int), ("float", float)):
        if re.search(rf"\b{text}\b", annotation):
            return kind
    return str


def add_options(group: Any, cls: type | str, flags: Flags) -> None:
    """One option per field in `flags` (defaults and help from `cls`; see the note above); the command
    remembers which flag sets which field (`args.field_flags`), to say errors in flags (`as_flags`). Pass
    `cls` as a "module:Class" reference so that building the parser imports nothing heavy."""
    known = dict(group._defaults.get("field_flags", {}))  # a group shares its parser's defaults
    for name, spec in flags.items():  # the command's main config comes first and keeps its names
        known.setdefault(name, spec if isinstance(spec, str) else spec[0])
    group.set_defaults(field_flags=known)
    docs = field_docs(cls)
    for name, spec in flags.items():
        flag, extra = (spec, {}) if isinstance(spec, str) else spec
        shown = config_default(cls, name)
        if isinstance(shown, (list, tuple)):
            shown = ",".join(str(v) for v in shown)
        kwargs = {"type": _scalar_type(cls, name), **extra}
        if "choices" in kwargs:
            kwargs.pop("type")
        help_text = kwargs.pop("help", None) or docs.get(name) or name.replace("_", " ")
        help_text = help_text.replace(f" ({shown})", "")  # the docstring's own note of the default
        group.add_argument(flag, default=None, help=f"{help_text} (default: {shown})", **kwargs)


def given(args: argparse.Namespace, flags: Flags) -> dict[str, Any]:
    """{field: value} for the options of `flags` that were given on the command line."""
    out = {}
    for name, spec in flags.items():
        flag = spec if isinstance(spec, str) else spec[0]
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            out[name] = value
    return out
