"""Find, score and causally test induction heads in TransformerLens models.

The core API (CONTRACT.md): `load_model`, `save_checkpoint`, `score_heads`, `icl_score`,
`default_model`; one job per CLI subcommand in `induction.jobs` (`jobs.scan(model, ScanConfig())`
returns the `ScanReport` that `induction scan` prints); reports in `induction.reports`, figures in
`induction.plots`; causal tools in the sibling package `circuits`.

The subpackages read like the pipeline: `loading` (model specs -> bridge) -> `inputs` (prompts,
streams, tasks) -> `heads` (per-head scores) and `measures` (ICL score, effects, formation, few-shot)
-> `training` -> `jobs` (one per subcommand) -> `reports` -> `plots` -> `cli`; `common` holds the
rules they share.
"""

from induction import _compat

_compat.install()  # toolkit 0.1's flat module names (`induction.scores`, ...) still import

# The public names load on first use (PEP 562): `import induction.cli` (argument parsing, `--help`)
# must not pay for torch and TransformerLens; `from induction import load_model` works as before.
_LAZY = {
    "HeadScores": "induction.heads.records",
    "ScoreConfig": "induction.heads.config",
    "score_heads": "induction.heads.scores",
    "ModelRef": "induction.loading.models",
    "load_model": "induction.loading.models",
    "ModelLoadError": "induction.loading.native",
    "save_checkpoint": "induction.loading.native",
    "ICLConfig": "induction.measures.icl",
    "ICLScore": "induction.measures.icl",
    "icl_score": "induction.measures.icl",
    "default_model": "induction.training.defaults",
    "default_run": "induction.training.defaults",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'induction' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "HeadScores",
    "ICLConfig",
    "ICLScore",
    "ModelLoadError",
    "ModelRef",
    "ScoreConfig",
    "default_model",
    "default_run",
    "icl_score",
    "load_model",
    "save_checkpoint",
    "score_heads",
]
