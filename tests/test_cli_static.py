"""The argument-parsing path is light, and what it reads from source equals the imported Configs.

`induction --help`, every subcommand's --help and every argument error must answer at once, so
the parser reads Config defaults from source (`induction.cli.static`) instead of importing the
modules that define them. These tests hold the import list of that path, and check that every
value read statically is the value Python gets by importing it (one source of truth, read twice).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from induction.cli import COMMANDS, build_parser, static

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "transformer_lens", "plotly", "pandas", "numpy", "circuits", "jaxtyping",
         "einops", "safetensors", "tqdm", "rich", "kaleido")

# One cold process runs every --help and several argument errors through `main`, then lists what is
# imported. (sys.modules only grows, so the union of all these paths must be light.)
_PROBE = """
import json, sys
from induction.cli import COMMANDS, main
codes = []
for argv in [["--help"], *[[c, "--help"] for c in COMMANDS], ["nope"], ["scan"], ["scan", "m", "--format", "xml"],
             ["scan", "m", "--prompts", "many"], ["track", "r", "--ablate", "max"], ["fewshot", "m", "--task", "nope"],
             ["train", "--layers", "2.5"], ["bench", "--models", "nope"], ["scan", "m", "--columns", "nope"]]:
    try:
        codes.append(main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"codes": codes, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_help_and_argument_errors_import_nothing_heavy():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    n_help = 1 + len(COMMANDS)
    assert result["codes"][:n_help] == [0] * n_help  # --help exits 0
    assert all(code == 2 for code in result["codes"][n_help:]), result["codes"]  # each bad argument: status 2
    errors = [line for line in done.stderr.splitlines() if line]
    assert len(errors) == len(result["codes"]) - n_help  # one line per error, no traceback
    assert all(line.startswith("induction") for line in errors), errors
    assert not set(HEAVY) & set(result["modules"]), sorted(set(HEAVY) & set(result["modules"]))


def _same(static_value, real_value) -> bool:
    if isinstance(static_value, dict) and isinstance(real_value, dict):
        return static_value.keys() == real_value.keys() and all(
            v is static.OPAQUE or _same(v, real_value[k]) for k, v in static_value.items())
    return static_value == real_value and type(static_value) is type(real_value)


def test_every_value_read_from_source_equals_the_imported_one():
    parser = build_parser()
    for command in COMMANDS:  # building every subparser reads every reference the CLI uses
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
    refs = sorted(static.SEEN)
    assert len(refs) >= 20  # the CLI reads its Configs and choices this way (not a vacuous loop)
    checked_fields = 0
    for ref in refs:
        module, name = ref.split(":")
        real = getattr(importlib.import_module(module), name)
        if not inspect.isclass(real):
            assert _same(static.constant(ref), real), ref
            continue
        real_fields = {f.name: f for f in dataclasses.fields(real)}
        read = static.fields(ref)
        assert read.keys() == real_fields.keys(), ref
        docs = static.attribute_docs(inspect.getdoc(real) or "")
        for fname, f in read.items():
            real_field = real_fields[fname]
            if real_field.default is not dataclasses.MISSING:
                expected = real_field.default
            elif real_field.default_factory is not dataclasses.MISSING:
                expected = real_field.default_factory()
            else:
                assert f.default is static.MISSING, f"{ref}.{fname}"
                continue
            if f.default is not static.OPAQUE:
                assert _same(f.default, expected), f"{ref}.{fname}: {f.default!r} != {expected!r}"
                checked_fields += 1
            assert f.annotation == str(real_field.type), f"{ref}.{fname}"
            assert f.doc == docs.get(fname, ""), f"{ref}.{fname}"
    assert checked_fields >= 40


def test_reader_follows_imports_and_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    pkg = tmp_path / "staticpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (pkg / "a.py").write_text("BASE = ('x', 'y')\nN = 3\nTABLE = {'p': lambda: 1, 'q': 2}\n"
                              "def f():\n    return 1\nCALLED = f()\n")
    (pkg / "b.py").write_text(
        "from dataclasses import dataclass, field\nfrom staticpkg.a import BASE, N\nfrom staticpkg import a\n"
        "ALL = (*BASE, 'z') + a.BASE[:1]\n"
        "@dataclass\nclass C:\n    \"\"\"A config.\n\n    Attributes:\n        n: how many. More text.\n"
        "        names: which\n            ones.\n    \"\"\"\n\n"
        "    n: int = -N\n    names: tuple[str, ...] = field(default_factory=lambda: ALL)\n    req: str\n"
        "    made: list = field(default_factory=a.f)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert static.constant("staticpkg.b:ALL") == ("x", "y", "z", "x")
    assert static.constant("staticpkg.a:TABLE") == {"p": static.OPAQUE, "q": 2}
    with pytest.raises(static.StaticError):
        static.constant("staticpkg.a:CALLED")  # a call to user code is never evaluated
    fields = static.fields("staticpkg.b:C")
    assert (fields["n"].default, fields["names"].default) == (-3, ("x", "y", "z", "x"))
    assert fields["req"].default is static.MISSING and fields["made"].default is static.OPAQUE
    assert (fields["n"].doc, fields["names"].doc, fields["n"].annotation) == ("how many", "which ones", "int")
    assert "staticpkg" not in sys.modules
