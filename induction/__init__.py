"""Find, score and causally test induction heads in TransformerLens models.

The core API (CONTRACT.md): `load_model`, `save_checkpoint`, `score_heads`, `icl_score`,
`default_model`; reports and figures in `induction.report` / `induction.plots`; causal tools in
the sibling package `circuits`.
"""

from induction.models import ModelLoadError, load_model, save_checkpoint
from induction.scores import HeadScores, ScoreConfig, score_heads
from induction.icl import ICLScore, icl_score
from induction.defaults import default_model, default_run

__all__ = [
    "HeadScores",
    "ICLScore",
    "ModelLoadError",
    "ScoreConfig",
    "default_model",
    "default_run",
    "icl_score",
    "load_model",
    "save_checkpoint",
    "score_heads",
]
