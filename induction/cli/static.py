"""Read a Config's defaults, field types and field docs, and module constants, from source, unimported.

The command line states no default of its own: every option's default and help come from the
job's Config dataclass (CONTRACT, STYLE "defaults read from the Config, never restated"). The
Configs live beside the code that uses them, in modules that import torch and TransformerLens, and
importing those costs seconds; `induction --help` and an argument error must answer at once. So
the parser reads the same dataclass definitions from their source files with `ast`, without
executing them: the Config stays the one source of truth, and the argument-parsing path imports
nothing heavy. The job still builds the real Config (its `__post_init__` validates), and
tests/test_cli_static.py checks that every value read here equals the imported one.

A reference is ``"package.module:NAME"``. Supported definitions: literals, tuples/lists/dicts of them
(a dict value that is not a literal, such as a lambda, reads as `OPAQUE`: its keys still serve as
choices), names defined in or imported into the module, ``module.NAME``, ``a + b``, ``(*A, "b")``,
``A[i]``, ``-x`` and pure builtins (``tuple(range(-4, 17))``). Anything else raises `StaticError` (a bug to fix here, caught by the test).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SEEN: set[str] = set()
"""Every reference read in this process (tests compare each one against the imported value)."""


class StaticError(Exception):
    """A definition this reader cannot evaluate without importing its module."""


class _Opaque:
    def __repr__(self) -> str:
        return "<not a literal>"


OPAQUE = _Opaque()


@dataclass(frozen=True)
class StaticField:
    name: str
    annotation: str  # the annotation's source text, e.g. "int | None"
    default: Any  # MISSING when the field has none
    doc: str  # the field's entry under "Attributes:" in the class docstring ("" when absent)


MISSING = object()


@lru_cache(maxsize=None)
def module_file(module: str) -> Path:
    """The source file of `module`, found without importing it or its packages."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level package is located, not imported
    if spec is None or spec.origin is None:
        raise StaticError(f"no module {module}")
    base = Path(spec.origin).parent.joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise StaticError(f"no source file for {module}")


@lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    return ast.parse(module_file(module).read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = module_file(module).name == "__init__.py"
    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(parts + ([node.module] if node.module else []))


def _definition(module: str, name: str) -> tuple[str, ast.AST]:
    """(module, node) that defines `name` at the top level of `module`, following imports."""
    found: tuple[str, ast.AST] | None = None
    for node in _tree(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = (module, node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            if node.value is not None:
                found = (module, node.value)
        elif isinstance(node, ast.ClassDef) and node.name == name:
            found = (module, node)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node)
                    try:
                        module_file(f"{source}.{alias.name}")
                        found = (f"{source}.{alias.name}", ast.Module(body=[], type_ignores=[]))
                    except StaticError:
                        found = _definition(source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    found = (alias.name if alias.asname else alias.name.split(".")[0], ast.Module(body=[], type_ignores=[]))
    if found is None:
        raise StaticError(f"{module} defines no {name}")
    return found


_PURE = {"tuple": tuple, "list": list, "range": range, "sorted": sorted, "len": len, "min": min, "max": max,
         "frozenset": frozenset}
"""Builtins with no side effects, applied to arguments that were themselves read statically."""


class _ModuleRef:
    def __init__(self, module: str) -> None:
        self.module = module


def _eval(module: str, node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items: list[Any] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                items.extend(_eval(module, elt.value))
            else:
                items.append(_eval(module, elt))
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(_eval(module, v))
                continue
            try:
                out[_eval(module, k)] = _eval(module, v)
            except StaticError:
                out[_eval(module, k)] = OPAQUE
        return out
    if isinstance(node, ast.Name):
        where, definition = _definition(module, node.id)
        if isinstance(definition, ast.Module):
            return _ModuleRef(where)
        if isinstance(definition, ast.ClassDef):
            raise StaticError(f"{node.id} is a class")
        return _eval(where, definition)
    if isinstance(node, ast.Attribute):
        base = _eval(module, node.value)
        if isinstance(base, _ModuleRef):
            where, definition = _definition(base.module, node.attr)
            if isinstance(definition, ast.Module):
                return _ModuleRef(where)
            return _eval(where, definition)
        raise StaticError(f"{ast.unparse(node)} is not a module constant")
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval(module, node.left), _eval(module, node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PURE and not node.keywords:
        return _PURE[node.func.id](*(_eval(module, arg) for arg in node.args))
    if isinstance(node, ast.Slice):
        return slice(*(None if part is None else _eval(module, part) for part in (node.lower, node.upper, node.step)))
    if isinstance(node, ast.Subscript):
        return _eval(module, node.value)[_eval(module, node.slice)]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(module, node.operand)
    raise StaticError(f"{module}: cannot read {ast.unparse(node)!r} without importing it")


def _split(ref: str) -> tuple[str, str]:
    module, sep, name = ref.partition(":")
    if not sep:
        raise StaticError(f"reference {ref!r} is not 'module:NAME'")
    return module, name


def constant(ref: str) -> Any:
    """The value of module constant `ref` ("module:NAME")."""
    SEEN.add(ref)
    module, name = _split(ref)
    where, node = _definition(module, name)
    if isinstance(node, (ast.Module, ast.ClassDef)):
        raise StaticError(f"{ref} is not a constant")
    return _eval(where, node)


def _field_default(module: str, value: ast.AST | None) -> Any:
    if value is None:
        return MISSING
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "field":
        kw = {k.arg: k.value for k in value.keywords}
        if "default" in kw:
            return _eval(module, kw["default"])
        factory = kw.get("default_factory")
        if isinstance(factory, ast.Name) and factory.id in ("list", "tuple", "dict", "set"):
            return {"list": [], "tuple": (), "dict": {}, "set": set()}[factory.id]
        if isinstance(factory, ast.Lambda):
            return _eval(module, factory.body)
        if factory is not None:
            return OPAQUE  # e.g. a nested Config: no CLI option takes it whole
        return MISSING
    return _eval(module, value)


def attribute_docs(doc: str) -> dict[str, str]:
    """Each field's entry in a Google-style "Attributes:" section, its first sentence."""
    import re

    docs: dict[str, str] = {}
    current = None
    in_section = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        match = re.match(r"^    (\w+)(?:, \w+)*: (.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif line.startswith("        ") and current:
            docs[current] += " " + line.strip()
        elif line.strip():
            in_section = False
    return {name: re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(".") for name, text in docs.items()}


@lru_cache(maxsize=None)
def _fields(ref: str) -> dict[str, StaticField]:
    module, name = _split(ref)
    where, node = _definition(module, name)
    if not isinstance(node, ast.ClassDef):
        raise StaticError(f"{ref} is not a class")
    out: dict[str, StaticField] = {}
    for base in node.bases:  # dataclass fields of base classes come first
        if isinstance(base, ast.Name) and base.id not in ("object", "Protocol"):
            out.update(_fields(f"{where}:{base.id}"))
    docs = attribute_docs(ast.get_docstring(node) or "")
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotation = ast.unparse(stmt.annotation)
            if annotation.startswith("ClassVar"):
                continue
            try:
                default = _field_default(where, stmt.value)
            except StaticError:
                default = OPAQUE  # only an error if an option takes this field (`induction.cli.add_options`)
            out[stmt.target.id] = StaticField(stmt.target.id, annotation, default, docs.get(stmt.target.id, ""))
    return out


def fields(ref: str) -> dict[str, StaticField]:
    """The dataclass fields of class `ref` ("module:Class"), by name, read from its source."""
    SEEN.add(ref)
    return _fields(ref)
