"""Old flat module names (toolkit 0.1, before the pipeline subpackages) still import.

`import induction.scores` gives the module now at `induction.heads.scores` (the same object, so
attributes set on one are seen through the other). Nothing in the toolkit uses these names; they
keep user code and notebooks written against 0.1 working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "induction.checks": "induction.common.checks",
    "induction.fileio": "induction.common.fileio",
    "induction.stats": "induction.common.stats",
    "induction.models": "induction.loading.models",
    "induction.checkpoint": "induction.loading.native",
    "induction.checkpoints": "induction.loading.sources",
    "induction.runs": "induction.loading.runs",
    "induction.hf_dirs": "induction.loading.hf_dirs",
    "induction.cache": "induction.loading.cache",
    "induction.devices": "induction.loading.devices",
    "induction.data": "induction.inputs.repeated",
    "induction.prompts": "induction.inputs.prompts",
    "induction.streams": "induction.inputs.streams",
    "induction.vocab": "induction.inputs.stream_configs",
    "induction.tasks": "induction.inputs.tasks",
    "induction.datasets": "induction.inputs.datasets",
    "induction.scores": "induction.heads.scores",
    "induction.offsets": "induction.heads.offsets",
    "induction.handbuilt": "induction.bench.handbuilt",
    "induction.icl": "induction.measures.icl",
    "induction.losses": "induction.measures.losses",
    "induction.metrics": "induction.measures.metrics",
    "induction.effects": "induction.measures.effects",
    "induction.formation": "induction.measures.formation",
    "induction.fewshot": "induction.measures.fewshot",
    "induction.train": "induction.training.train",
    "induction.defaults": "induction.training.defaults",
    "induction.executor": "induction.jobs.executor",
    "induction.demo": "induction.jobs.demo",
    "induction.report": "induction.reports",
    "circuits.sweep": "circuits.engine",
}


def _target(name: str) -> str | None:
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass


class _OldNames(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new = _target(name)
        if new is None:
            return None
        return importlib.util.spec_from_loader(name, _Alias(new))


def install() -> None:
    if not any(isinstance(f, _OldNames) for f in sys.meta_path):
        sys.meta_path.append(_OldNames())
