"""Model-agnostic causal tools for TransformerBridge models (never imports `induction`).

- `ablate_heads`, `ablate_head_sets`, `ablate_head_set`, `random_head_control`,
  `layer_matched_random_heads`: ablation (zero, mean, resample, pattern-preserving; `METHODS`)
  and its random-set control.
- `patch_heads`: exact activation patching of head outputs (TransformerLens' numbers, faster).
- `attribute_heads`: attribution patching, its first-order estimate; `method="atp-star"`: AtP*
  (Kramár et al. 2024: the QK fix and GradDrop, `circuits.atp`).
- `patch_paths`, `all_paths`, `HeadPath`: path patching, a sender head's output into a receiver
  head's query, key or value only (`circuits.paths`).
- `composition_scores`, `composition_baseline`: Q/K/V composition between heads.
- `direct_logit_attribution`, `through_final_norm`: each head's direct effect on a logit.

Layout: `hooks` (hook names, head outputs, shared checks) -> `engine` (the engine that runs many
intervened forwards) -> `ablation`, `patching`, `paths` -> `atp`; `attribution`, `composition` and
`logit_attribution` read `hooks` only; `memory` is the activation-memory formula (the engine sizes its
stacked forwards with it; `induction.loading.memory` plans whole jobs with it).
"""

from circuits.ablation import (
    METHODS,
    ablate_head_set,
    ablate_head_sets,
    ablate_heads,
    derangement,
    layer_matched_random_heads,
    random_head_control,
)
from circuits.attribution import attribute_heads
from circuits.composition import composition_baseline, composition_scores
from circuits.hooks import Head, Metric
from circuits.logit_attribution import direct_logit_attribution, through_final_norm
from circuits.patching import patch_heads
from circuits.paths import INPUTS, HeadPath, PathPatchResult, all_paths, patch_paths

__all__ = [
    "INPUTS",
    "METHODS",
    "HeadPath",
    "PathPatchResult",
    "all_paths",
    "patch_paths",
    "Head",
    "Metric",
    "ablate_head_set",
    "ablate_head_sets",
    "ablate_heads",
    "attribute_heads",
    "composition_baseline",
    "composition_scores",
    "derangement",
    "direct_logit_attribution",
    "layer_matched_random_heads",
    "patch_heads",
    "random_head_control",
    "through_final_norm",
]
