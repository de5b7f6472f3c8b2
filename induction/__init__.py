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

from induction.heads.config import ScoreConfig
from induction.heads.records import HeadScores
from induction.heads.scores import score_heads
from induction.loading.models import ModelRef, load_model
from induction.loading.native import ModelLoadError, save_checkpoint
from induction.measures.icl import ICLConfig, ICLScore, icl_score
from induction.training.defaults import default_model, default_run

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
