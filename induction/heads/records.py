"""Per-head results: the detector's `HeadScores` (tensors, with intervals and per-prompt values) and
`HeadTable`, the one record shape that scan and track reports, the track cache, plots and the demo read:
one dict per head (CONTRACT's HEAD), with the rules every reader shares (the best head, the induction
heads, the layer x head grid of a score, whether a stored table is whole).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int
from torch import Tensor

from induction.heads.config import ScoreConfig
from induction.heads.offsets import OffsetScores

SCORE_NAMES = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
OFFSET_NAMES = ("offset_prefix_matching", "offset_copying")
"""Finite, or None (null) where the prompts could not score the offset, or offset copying at d < 1."""
FLAG_NAMES = ("is_induction", "is_shifted_induction")


class HeadTable(list):
    """One record (dict) per head, CONTRACT's HEAD: ``layer``, ``head``, the scores (`SCORE_NAMES`),
    the offset numbers, the flags, and whatever a job adds (``ablation_effect``, intervals). A list,
    so it is stored and read back as JSON as it is; the methods are the rules every reader shares."""

    def __init__(self, records: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(records)

    @property
    def n_layers(self) -> int:
        return 1 + max(int(r["layer"]) for r in self)

    @property
    def n_heads(self) -> int:
        return 1 + max(int(r["head"]) for r in self)

    def best(self, score: str = "prefix_matching") -> dict[str, Any]:
        """The head with the highest `score` (the first in layer-head order among equals)."""
        return max(self, key=lambda r: r[score])

    def induction_heads(self, strongest_first: bool = False) -> list[tuple[int, int]]:
        """(layer, head) of every head flagged as an induction head: in layer-head order, or by
        prefix-matching score, strongest first."""
        flagged = [r for r in self if r["is_induction"]]
        if strongest_first:
            flagged = sorted(flagged, key=lambda r: -float(r["prefix_matching"]))
        return [(int(r["layer"]), int(r["head"])) for r in flagged]

    def grid(self, name: str) -> np.ndarray:
        """`name` as a [layer, head_index] float array (NaN where a record has None)."""
        out = np.full((self.n_layers, self.n_heads), np.nan)
        for r in self:
            value = r.get(name)
            out[int(r["layer"]), int(r["head"])] = np.nan if value is None else float(value)
        return out

    def is_whole(self, extra_numbers: Sequence[str] = ()) -> bool:
        """Whether the table has every (layer, head) of a full grid exactly once, finite scores (and
        `extra_numbers`), offset numbers finite or None, an integer or None `induction_offset`, and
        both flags: what a stored table must be before anything reads it."""
        if not self or not all(isinstance(r, dict) for r in self):
            return False
        try:
            cells = {(int(r["layer"]), int(r["head"])) for r in self}
            numbers = [float(r[k]) for r in self for k in (*SCORE_NAMES, *extra_numbers)]
            numbers += [float(r[k]) for r in self for k in OFFSET_NAMES if r[k] is not None]
            offsets = [r["induction_offset"] for r in self]
        except (KeyError, TypeError, ValueError):
            return False
        if not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in offsets):
            return False
        n_layers = 1 + max(layer for layer, _ in cells)
        n_heads = 1 + max(head for _, head in cells)
        return (len(self) == len(cells) == n_layers * n_heads and all(math.isfinite(x) for x in numbers)
                and all(isinstance(r.get(flag), bool) for r in self for flag in FLAG_NAMES))


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
        return self.table().induction_heads(strongest_first=True)

    def table(self) -> HeadTable:
        """The records (`to_records`) as a `HeadTable`."""
        return HeadTable(self.to_records())

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
