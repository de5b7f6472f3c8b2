"""The head detector's settings (`ScoreConfig`): prompts, thresholds, the copying estimate, offsets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from induction.common.checks import check_min, check_range
from induction.common.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from induction.heads.offsets import DEFAULT_OFFSETS, MIN_SUPPORT
from induction.inputs.prompts import (
    DEFAULT_SEQ_LEN,
    RepeatedTokensConfig,
)


@dataclass
class ScoreConfig:
    """Settings of the head detector.

    Attributes:
        prompts: the repeated-random-token prompts (`RepeatedTokensConfig`).
        batch_size: prompts per forward pass.
        prefix_threshold: minimum prefix-matching score of an induction head, in [0, 1]. A head
            that attends at a fixed offset scores ~1/(number of distinct periods) at most.
        copying_threshold: minimum copying score of an induction head, in [-1, 1].
        copying_sources: source positions per prompt and head whose copying score is computed,
            drawn with probability proportional to the attention they get from repeated tokens; 0
            scores every source. The estimate is unbiased, with a sampling standard error
            (`copying_se`) against the exhaustive score (module docstring); at least 2 when sampling.
            None is the same as 0 (exhaustive: ~35x the cost of 4 on GPT-2 small).
        copying_seed: seed of the source draws; None means the prompts' seed.
        n_bootstrap: bootstrap resamples (over prompts) for the confidence intervals; 0 disables.
        ci_level: confidence level of the intervals, in (0, 1).
        min_offset: the smallest offset d whose attention is scored for `induction_offset`, <= 1
            (0 is the duplicate-token score, < 0 the tokens before an earlier occurrence).
        max_offset: the largest offset d scored, >= 1; offsets the prompts' periods cannot support
            are left unscored (module docstring), so a longer one needs longer periods (`max_period`).
        offset_support: the smallest fraction of prompts that must have offset-d keys (a period
            longer than |d|) for offset d to be scored, in (0, 1].
    """

    prompts: RepeatedTokensConfig = field(default_factory=RepeatedTokensConfig)
    batch_size: int = 16
    prefix_threshold: float = 0.4
    copying_threshold: float = 0.5
    copying_sources: int | None = 4
    copying_seed: int | None = None
    n_bootstrap: int = DEFAULT_RESAMPLES
    ci_level: float = DEFAULT_LEVEL
    min_offset: int = DEFAULT_OFFSETS[0]
    max_offset: int = DEFAULT_OFFSETS[-1]
    offset_support: float = MIN_SUPPORT

    def __post_init__(self) -> None:
        check_min("batch_size", self.batch_size, 1)
        check_range("prefix_threshold", self.prefix_threshold, 0, 1)
        check_range("copying_threshold", self.copying_threshold, -1, 1)
        if self.copying_sources is not None and (self.copying_sources < 0 or self.copying_sources == 1):
            raise ValueError(f"copying_sources must be >= 2 (the sampling error needs two sources per prompt and "
                             f"head), or 0 for the exhaustive score; got {self.copying_sources}")
        check_min("n_bootstrap", self.n_bootstrap, 0)
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.min_offset > 1:
            raise ValueError(f"min_offset must be <= 1 (the offsets include canonical induction, d = 1), "
                             f"got {self.min_offset}")
        if self.max_offset < 1:
            raise ValueError(f"max_offset must be >= 1 (the offsets include canonical induction, d = 1), "
                             f"got {self.max_offset}")
        if not 0.0 < self.offset_support <= 1.0:
            raise ValueError(f"offset_support must be in (0, 1], got {self.offset_support}")
        # Bounds from the prompt length: no prompt has a key |d| >= its length from a query, and
        # more copying draws than source positions cost more than scoring every source (and an
        # offset range of 10^9 would be built before anything could say it is unsupported).
        # The default offsets stay valid on short prompts (those beyond them are left unscored).
        length = self.prompts.seq_len or DEFAULT_SEQ_LEN
        limit = max(length - 1, *(abs(d) for d in DEFAULT_OFFSETS))
        for name, d in (("min_offset", -self.min_offset), ("max_offset", self.max_offset)):
            if d > limit:
                raise ValueError(f"{name} must be within the prompt length, |d| <= {limit} ({length} tokens, "
                                 f"seq_len): no query has a key farther away; got {getattr(self, name)}")
        if self.copying_sources is not None and self.copying_sources > length:
            raise ValueError(f"copying_sources must be at most the prompt length ({length} tokens, seq_len): "
                             f"more draws than source positions cost more than the exhaustive score (0); "
                             f"got {self.copying_sources}")

    @property
    def offsets(self) -> tuple[int, ...]:
        """The offsets d scored: min_offset..max_offset."""
        return tuple(range(self.min_offset, self.max_offset + 1))

    @property
    def resolved_copying_seed(self) -> int:
        return self.prompts.seed if self.copying_seed is None else self.copying_seed

    def copying_method(self) -> dict[str, Any]:
        """How the copying score is computed, for reports and provenance."""
        if not self.copying_sources:
            return {"method": "exhaustive", "sources_per_prompt": None, "seed": None,
                    "note": "every source scored; copying_se is 0"}
        return {"method": "sampled", "sources_per_prompt": self.copying_sources, "seed": self.resolved_copying_seed,
                "note": "sources drawn with replacement, probability proportional to the attention from repeated "
                        "tokens (unbiased); copying_se: sampling standard error against the exhaustive score on "
                        "the same prompts; copying_ci: bootstrap over prompts, sampling noise included"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
