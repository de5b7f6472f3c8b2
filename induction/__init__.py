"""Find, score and causally test induction heads in TransformerLens models.

The core API (CONTRACT.md): `load_model`, `save_checkpoint`, `score_heads`, `icl_score`,
`default_model`; one job per CLI subcommand in `induction.jobs` (`jobs.scan(model, ScanConfig())`
returns the `ScanReport` that `induction scan` prints); reports in `induction.report`, figures in
`induction.plots`; causal tools in the sibling package `circuits`.
"""

from induction.checkpoint import ModelLoadError, save_checkpoint
from induction.defaults import default_model, default_run
from induction.icl import ICLConfig, ICLScore, icl_score
from induction.models import ModelRef, load_model
from induction.scores import HeadScores, ScoreConfig, score_heads

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
