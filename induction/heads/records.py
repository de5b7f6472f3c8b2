"""Per-head results: the detector's `HeadScores` and the one record shape every report, cache and plot reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Bool, Float, Int
from torch import Tensor

from induction.heads.config import ScoreConfig
from induction.heads.offsets import OffsetScores

SCORE_NAMES = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")


@dataclass
class HeadScores:
    """Per-head scores, each a [layer, head_index] tensor; `ci[name]` is [layer, head_index, 2].

    `copying_se` is the copying estimate's sampling standard error (0 when exhaustive), and
    `copying_method` says how it was computed (`ScoreConfig.copying_method`). The shifted-induction
    scores (module docstring): `induction_offset` (1 where no offset could be scored),
    `offset_prefix_matching` and `offset_copying` (NaN where unscored, e.g. offset copying at d < 1),
    `is_shifted_induction`; `offsets` holds every offset's attention and copying.
    """

    prefix_matching: Float[Tensor, "layer head_index"]
    copying: Float[Tensor, "layer head_index"]
    copying_se: Float[Tensor, "layer head_index"]
    copying_ov: Float[Tensor, "layer head_index"]
    previous_token: Float[Tensor, "layer head_index"]
    duplicate_token: Float[Tensor, "layer head_index"]
    is_induction: Bool[Tensor, "layer head_index"]
    induction_offset: Int[Tensor, "layer head_index"]
    offset_prefix_matching: Float[Tensor, "layer head_index"]
    offset_copying: Float[Tensor, "layer head_index"]
    is_shifted_induction: Bool[Tensor, "layer head_index"]
    offsets: OffsetScores
    ci: dict[str, Tensor]
    per_prompt: dict[str, Tensor]
    config: ScoreConfig
    copying_method: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.prefix_matching.shape[0]

    @property
    def n_heads(self) -> int:
        return self.prefix_matching.shape[1]

    def induction_heads(self) -> list[tuple[int, int]]:
        """(layer, head) of every head flagged as an induction head, strongest prefix-matching first."""
        heads = [tuple(x) for x in self.is_induction.nonzero().tolist()]
        return sorted(heads, key=lambda lh: -float(self.prefix_matching[lh]))

    def shifted_induction_heads(self) -> list[tuple[int, int]]:
        """(layer, head) of every shifted induction head, strongest offset prefix-matching first."""
        heads = [tuple(x) for x in self.is_shifted_induction.nonzero().tolist()]
        return sorted(heads, key=lambda lh: -float(self.offset_prefix_matching[lh]))

    def scored_offsets(self) -> tuple[int, ...]:
        """The offsets enough prompts could score (`ScoreConfig.offset_support`)."""
        scored = self.offsets.support >= self.config.offset_support
        return tuple(d for d, ok in zip(self.offsets.offsets, scored.tolist()) if ok)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per head (CONTRACT's HEAD), with `<score>_ci` intervals where available and `copying_se`;
        unscored offset numbers are None (JSON null), and so is `induction_offset` when no offset was scored."""
        out = []
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                rec: dict[str, Any] = {"layer": layer, "head": head}
                for name in SCORE_NAMES:
                    rec[name] = float(getattr(self, name)[layer, head])
                rec["copying_se"] = float(self.copying_se[layer, head])
                rec["is_induction"] = bool(self.is_induction[layer, head])
                score = float(self.offset_prefix_matching[layer, head])
                copying = float(self.offset_copying[layer, head])
                rec["induction_offset"] = None if math.isnan(score) else int(self.induction_offset[layer, head])
                rec["offset_prefix_matching"] = None if math.isnan(score) else score
                rec["offset_copying"] = None if math.isnan(copying) else copying
                rec["is_shifted_induction"] = bool(self.is_shifted_induction[layer, head])
                for name, interval in self.ci.items():
                    rec[f"{name}_ci"] = [float(interval[layer, head, 0]), float(interval[layer, head, 1])]
                out.append(rec)
        return out
