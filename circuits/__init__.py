"""Model-agnostic causal tools for TransformerBridge models (never imports `induction`).

- `ablate_heads`, `ablate_head_set`, `random_head_control`, `layer_matched_random_heads`:
  ablation (zero, mean, resample, pattern-preserving) and its random-set control.
- `patch_heads`: exact activation patching of head outputs (TransformerLens' numbers, faster).
- `attribute_heads`: attribution patching, its first-order estimate.
- `composition_scores`, `composition_baseline`: Q/K/V composition between heads.
- `direct_logit_attribution`: each head's direct effect on the answer's logit.
"""

from circuits.ablation import (
    ablate_head_set,
    ablate_heads,
    layer_matched_random_heads,
    random_head_control,
)
from circuits.attribution import attribute_heads
from circuits.composition import composition_baseline, composition_scores
from circuits.logit_attribution import direct_logit_attribution
from circuits.patching import patch_heads

__all__ = [
    "ablate_head_set",
    "ablate_heads",
    "attribute_heads",
    "composition_baseline",
    "composition_scores",
    "direct_logit_attribution",
    "layer_matched_random_heads",
    "patch_heads",
    "random_head_control",
]
