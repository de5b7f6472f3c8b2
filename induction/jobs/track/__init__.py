"""`induction track`: every checkpoint of a run scored, the phase change found, results cached per checkpoint.

`config` holds the settings (`TrackConfig`) and what the cache keys hash; `plan` decides which
checkpoints a run has and which the cache lacks; `tasks` is what runs per checkpoint (through an
executor: in this process or as Ray tasks); `run` puts it together (`track`).
"""

from __future__ import annotations

from induction.jobs.track.config import (
    INDUCTION_SET_DIR,
    TRACK_ABLATIONS,
    TRACK_DIR,
    TRACK_FORMAT_VERSION,
    TrackConfig,
    ablation_code_hash,
    scoring_code_hash,
)
from induction.jobs.track.plan import InductionSetPlan, TrackPlan, final_checkpoint, plan_induction_set, plan_track
from induction.jobs.track.run import ablation_summary, finish_track, run_plans, track
from induction.jobs.track.tasks import (
    check_track_memory,
    induction_set_task,
    score_checkpoint,
    score_task,
    valid_result,
    valid_set_result,
)
from induction.measures.heldout import HELD_OUT_SEED_OFFSET, HELD_OUT_TOKENS, held_out_count, held_out_stream

__all__ = [
    "HELD_OUT_SEED_OFFSET",
    "HELD_OUT_TOKENS",
    "INDUCTION_SET_DIR",
    "TRACK_ABLATIONS",
    "TRACK_DIR",
    "TRACK_FORMAT_VERSION",
    "InductionSetPlan",
    "TrackConfig",
    "TrackPlan",
    "ablation_code_hash",
    "ablation_summary",
    "check_track_memory",
    "final_checkpoint",
    "finish_track",
    "held_out_count",
    "held_out_stream",
    "induction_set_task",
    "plan_induction_set",
    "plan_track",
    "run_plans",
    "score_checkpoint",
    "score_task",
    "scoring_code_hash",
    "track",
    "valid_result",
    "valid_set_result",
]
