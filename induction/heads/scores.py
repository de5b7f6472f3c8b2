"""The head detector: prefix-matching, copying, previous-token and duplicate-token scores per head.

Definitions (on repeated-random-token prompts, `induction.inputs.prompts`; BOS never counts):
- prefix_matching (Olsson et al. 2022): for each query token that occurred earlier, the attention it
  pays to the tokens that followed its earlier occurrences, summed over those keys; averaged over
  such queries, then over prompts. 1 for a perfect induction head.
- duplicate_token: the same with the earlier occurrences themselves as keys.
- previous_token: the attention from each query to the position just before it, averaged.
- copying (after Olsson et al.'s empirical copying score): take the head's direct contribution to
  the logits when it reads source position s, ``l_s = norm(v_s W_O) W_U`` (``norm`` = the final
  LayerNorm's centring and weight; its scale drops out of every ratio below), and mean-centre it over
  the vocabulary: ``c = l_s - mean(l_s)``. The source's score is ``relu(c[t]) / max(relu(c)) -
  relu(-c[t]) / max(relu(-c))`` for s's own token t, in [-1, 1]: +1 when the head raises the token it
  reads more than any other, -1 when it lowers it more than any other, ~0 for a head that does
  neither; a source whose logit change is flat (`induction.heads.offsets.flat_logits`: max - min within
  float32 rounding of their size) scores 0, not the sign of rounding noise. (Normalising by the largest change rather than by the summed ReLU mass keeps the score
  from shrinking with the vocabulary: with the sum, the induction heads of the default toy model,
  which raise the copied token above every other, scored ~0.06 because diffuse small changes to the
  other 127 tokens outweigh it.) A prompt's score is the attention-weighted mean over the sources the
  head reads from repeated-token queries (BOS excluded), ``S_p = sum_k a_k s_k / sum_k a_k`` with
  ``a_k = sum_q pattern[q, k]`` over those queries; the head's score is the mean of S_p over prompts.
- copying_ov (Elhage et al. 2021): sum(eig)/sum(|eig|) of the full OV circuit W_E W_V W_O W_U, whose
  nonzero eigenvalues are those of the small matrix W_O W_U W_E W_V (d_head x d_head).
- is_induction: prefix_matching >= prefix_threshold and copying >= copying_threshold.
- shifted induction (`induction.heads.offsets`, same forward): per offset d in `ScoreConfig.offsets`, the
  offset attention a_d and the offset copying (the copying score read on the token the head should
  predict, tok[k - d + 1]); `induction_offset` = argmax_d a_d, `offset_prefix_matching` = that a_d,
  `offset_copying` = the offset copying there, and is_shifted_induction: induction_offset >= 2,
  offset_prefix_matching >= prefix_threshold and offset_copying >= copying_threshold. An offset is
  scored only when at least `offset_support` of the prompts have offset-d keys, i.e. a period > |d|:
  the longest offset scored is about the prompts' median period - 1 (the default toy model's
  prompts, periods 15-63, score d up to 16; a context of 40 tokens, periods 4-19, only up to ~10).

How it is computed: one forward per prompt batch and no activation cache. Hooks reduce each
layer's `hook_pattern` at once to the three attention scores and the source weights ``a_k``, and the
layer's `hook_v` is used and dropped when the block ends; the unembedding sees one position. A
source's full-vocabulary logit change goes through the per-head map ``W_O N W_U`` ([d_head, d_vocab];
N: the final norm as a matrix), streamed over vocabulary chunks of `COPYING_CHUNK_ELEMENTS`, so no
tensor grows with d_vocab x heads x positions.

The copying score is estimated (`ScoreConfig.copying_sources` = m, default 4): per prompt and head,
m sources are drawn with replacement with probability ``a_k / sum(a)``, and the mean of their scores
is an unbiased estimate of S_p (importance sampling whose weights are all 1). The offset copying
reads the same drawn sources on their offset targets (each target a gather from the same logits, so
it adds no logit computation); at d = 1 it is the copying estimate itself. Its uncertainty:
`copying_se`, the sampling standard error of the head's score against the exhaustive value on the
same prompts, ``sqrt(sum_p var_p / m) / P`` (var_p: the sample variance of prompt p's m scores), and
the bootstrap interval over prompts (`ci["copying"]`), which contains the sampling noise too. Every
source is scored (exhaustive, `copying_se` = 0) with `copying_sources` = 0 or None; on GPT-2 small
at default settings that costs ~6 forward passes of the prompts (one thread: ~600 s of CPU) against
~0.2 for the estimate (~17 s).

Every score comes with a bootstrap confidence interval over prompts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from circuits import through_final_norm
from circuits.hooks import FINAL_SCALE, UNEMBED_IN, pattern_name, resid_post_name, v_name
from induction.common.checks import check_min, check_range
from induction.common.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_ci
from induction.heads.offsets import (
    DEFAULT_OFFSETS,
    MIN_SUPPORT,
    OffsetScores,
    flat_logits,
    offset_attention,
    offset_keys,
)
from induction.inputs.prompts import (
    DEFAULT_SEQ_LEN,
    PromptError,
    RepeatedTokens,
    RepeatedTokensConfig,
    duplicate_mask,
    prefix_mask,
    previous_mask,
    repeated_random_tokens,
)
from induction.loading.devices import model_device
from induction.loading.models import model_info

SCORE_NAMES = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
_PROMPT_SCORES = ("prefix_matching", "copying", "previous_token", "duplicate_token")
_OFFSET_SCORES = ("offset_attention", "offset_copying")

COPYING_CHUNK_ELEMENTS = 2**20
"""The largest block of logits the copying score forms at once (`[head_index, source, vocabulary
chunk]`, float32 elements: 4 MiB, which stays in cache; larger blocks are slower on a CPU)."""


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
                                 f"--seq-len): no query has a key farther away; got {getattr(self, name)}")
        if self.copying_sources is not None and self.copying_sources > length:
            raise ValueError(f"copying_sources must be at most the prompt length ({length} tokens, --seq-len): "
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


def score_heads(
    model: TransformerBridge,
    cfg: ScoreConfig | None = None,
    prompts: RepeatedTokens | None = None,
    token_freqs: Tensor | None = None,
    progress: bool = False,
) -> HeadScores:
    """Score every attention head of `model` (see module docstring for the definitions and the estimate).

    Args:
        model: a TransformerBridge in eval mode.
        cfg: detector settings; defaults to `ScoreConfig()`.
        prompts: prompts to use instead of building them from `cfg.prompts`.
        token_freqs: optional [d_vocab] frequency table, for `exclude_top` / `exclude_bottom`.
        progress: show a progress bar over prompt batches (stderr).
    """
    cfg = cfg or ScoreConfig()
    if prompts is None:
        prompts = build_prompts(model, cfg.prompts, token_freqs)
    elif prompts.tokens.shape[1] > model.cfg.n_ctx:
        raise PromptError(f"prompt length {prompts.tokens.shape[1]} exceeds the model's context of {model.cfg.n_ctx} tokens")
    device = model_device(model)
    sources = cfg.copying_sources or 0
    gen = torch.Generator(device=device).manual_seed(cfg.resolved_copying_seed) if sources else None
    copying = CopyingMap(model)
    per_prompt: dict[str, list[Tensor]] = {name: [] for name in (*_PROMPT_SCORES, *_OFFSET_SCORES)}
    drawn: list[SourceDraws] = []
    n = prompts.tokens.shape[0]
    batches = range(0, n, cfg.batch_size)
    for start in tqdm(batches, desc="scoring heads", disable=not progress, leave=False):
        tokens = prompts.tokens[start : start + cfg.batch_size].to(device)
        scores, draws = _stream_batch(model, tokens, prompts.first_content_pos, copying, sources, gen, cfg.offsets)
        for name, value in scores.items():
            per_prompt[name].append(value)
        if draws is not None:
            drawn.append(draws)
    stacked = {name: torch.cat(values) for name, values in per_prompt.items() if values}
    if sources:
        stacked["copying"], variance, stacked["offset_copying"] = sampled_copying(copying, SourceDraws.cat(drawn))
        copying_se = (variance.sum(0) / sources).sqrt() / n
    else:
        copying_se = torch.zeros_like(stacked["copying"][0])
    offsets = OffsetScores.from_per_prompt(cfg.offsets, stacked.pop("offset_attention"),
                                           stacked.pop("offset_copying"), cfg.offset_support)
    induction_offset, offset_prefix_matching, offset_copying = offsets.best()
    means = {name: values.mean(0) for name, values in stacked.items()}
    ci = bootstrap_intervals(stacked, cfg.n_bootstrap, cfg.ci_level, seed=cfg.prompts.seed)
    ov = copying_ov_scores(model)
    is_induction = (means["prefix_matching"] >= cfg.prefix_threshold) & (means["copying"] >= cfg.copying_threshold)
    return HeadScores(
        prefix_matching=means["prefix_matching"],
        copying=means["copying"],
        copying_se=copying_se,
        copying_ov=ov,
        previous_token=means["previous_token"],
        duplicate_token=means["duplicate_token"],
        is_induction=is_induction,
        induction_offset=induction_offset,
        offset_prefix_matching=offset_prefix_matching,
        offset_copying=offset_copying,
        is_shifted_induction=offsets.is_shifted_induction(cfg.prefix_threshold, cfg.copying_threshold),
        offsets=offsets,
        ci=ci,
        per_prompt=stacked,
        config=cfg,
        copying_method={**cfg.copying_method(), "n_prompts": n},
    )


def build_prompts(
    model: TransformerBridge, cfg: RepeatedTokensConfig, token_freqs: Tensor | None = None
) -> RepeatedTokens:
    """Repeated-random-token prompts suited to `model`: its vocabulary, context, BOS and specials."""
    info = model_info(model)
    tok = getattr(model, "tokenizer", None)
    specials = tuple(getattr(tok, "all_special_ids", ()) or ()) if tok is not None else ()
    return repeated_random_tokens(
        cfg, model.cfg.d_vocab, model.cfg.n_ctx, info.bos_token_id, token_freqs, specials
    )


@dataclass
class SourceDraws:
    """The sources drawn for the copying estimate: what each one's score needs.

    Attributes:
        v: [layer, prompt, head_index, source, d_head] the value vector the head reads there.
        tokens: [layer, prompt, head_index, source] its token.
        weighted: [prompt, layer, head_index] whether any source got attention from a repeated token
            (a prompt where none did scores 0).
        targets: [layer, prompt, head_index, source, offset] the token an offset-d head reading it
            predicts, tok[k - d + 1], for each scored d >= 1 (`offset_targets`).
        valid: like `targets`: whether k - d + 1 is a content position.
        offsets: the scored offsets (the targets cover those >= 1).
    """

    v: Float[Tensor, "layer batch head_index source d_head"]
    tokens: Int[Tensor, "layer batch head_index source"]
    weighted: Bool[Tensor, "batch layer head_index"]
    targets: Int[Tensor, "layer batch head_index source target"]
    valid: Bool[Tensor, "layer batch head_index source target"]
    offsets: tuple[int, ...]

    @staticmethod
    def cat(parts: list[SourceDraws]) -> SourceDraws:
        def joined(name: str) -> Tensor:
            return torch.cat([getattr(p, name) for p in parts], dim=1)

        return SourceDraws(v=joined("v"), tokens=joined("tokens"), weighted=torch.cat([p.weighted for p in parts]),
                           targets=joined("targets"), valid=joined("valid"), offsets=parts[0].offsets)


def offset_targets(
    tokens: Int[Tensor, "batch pos"], offsets: Sequence[int], first: int
) -> tuple[Int[Tensor, "batch pos target"], Bool[Tensor, "pos target"]]:
    """For each source k and each offset d >= 1 of `offsets`: the token an offset-d induction head
    reading k predicts, tok[k - d + 1] (`induction.heads.offsets`' offset copying), and whether k - d + 1
    is a content position (where it is not, the target is 0 and must be ignored)."""
    seq = tokens.shape[1]
    d = torch.tensor([x for x in offsets if x >= 1], dtype=torch.long, device=tokens.device)
    predicted = torch.arange(seq, device=tokens.device)[:, None] - d[None, :] + 1  # [pos, target]
    valid = predicted >= first
    return torch.where(valid, tokens[:, predicted.clamp_min(0)], 0), valid


def offset_copying_per_prompt(
    positive: Float[Tensor, "*lead target"], offsets: Sequence[int]
) -> Float[Tensor, "*lead offset"]:
    """Offset copying at every offset: the scores at d >= 1 in place, NaN at d < 1."""
    out = torch.full((*positive.shape[:-1], len(offsets)), float("nan"), device=positive.device)
    out[..., [i for i, d in enumerate(offsets) if d >= 1]] = positive
    return out


@torch.no_grad()
def _stream_batch(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    first: int,
    copying: CopyingMap,
    sources: int,
    gen: torch.Generator | None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
) -> tuple[dict[str, Tensor], SourceDraws | None]:
    """One forward over a prompt batch: per-prompt scores [batch, layer, head_index] (the offset ones
    [batch, layer, head_index, offset]) and, when `sources` > 0, the drawn sources (else the
    exhaustive copying and offset copying scores are among the scores)."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    batch, seq = tokens.shape
    prefix = prefix_mask(tokens, first)
    # The masks are sparse (a query has a few earlier occurrences): sum the pattern at their entries only.
    prefix_at = prefix.nonzero(as_tuple=True)  # (batch, query_pos, key_pos) indices
    duplicate_at = duplicate_mask(tokens, first).nonzero(as_tuple=True)
    rows = prefix.any(-1).float()  # queries whose token occurred before: the repeated part
    n_rows = rows.sum(-1).clamp_min(1.0)[:, None]  # [batch, 1]
    after = previous_mask(seq, first, tokens.device).nonzero(as_tuple=True)  # (query, query - 1) pairs
    content = (torch.arange(seq, device=tokens.device) >= first).float()
    bi = torch.arange(batch, device=tokens.device)[:, None, None]
    keys = offset_keys(tokens, offsets, first)
    targets, valid = offset_targets(tokens, offsets, first)  # [batch, pos, target], [pos, target]
    out: dict[str, list[Tensor | None]] = {name: [None] * n_layers for name in (*_PROMPT_SCORES, *_OFFSET_SCORES)}
    source_weights: list[Tensor | None] = [None] * n_layers  # [batch, head_index, key_pos]
    picked: list[Tensor | None] = [None] * n_layers  # [batch, head_index, source]
    v_drawn: list[Tensor | None] = [None] * n_layers
    tok_drawn: list[Tensor | None] = [None] * n_layers
    targets_drawn: list[Tensor | None] = [None] * n_layers
    valid_drawn: list[Tensor | None] = [None] * n_layers
    v_of: dict[int, Tensor] = {}

    def summed_at(p: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        b, q, k = at
        return torch.zeros(batch, n_heads, device=p.device).index_add_(0, b, p[b, :, q, k])  # [batch, head_index]

    def keep_v(layer: int):
        def hook(v: Tensor, hook: Any) -> None:  # [batch, pos, kv_head, d_head]
            v_of[layer] = v
        return hook

    def reduce_pattern(layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:  # [batch, head_index, query_pos, key_pos]
            p = pattern.float()
            out["prefix_matching"][layer] = summed_at(p, prefix_at) / n_rows
            out["duplicate_token"][layer] = summed_at(p, duplicate_at) / n_rows
            out["previous_token"][layer] = p[:, :, after[0], after[1]].sum(-1) / max(1, after[0].numel())
            out["offset_attention"][layer] = offset_attention(p, keys)  # [batch, head_index, offset]
            # The attention each source gets from repeated queries: [batch, head_index, key_pos].
            weights = (rows[:, None, None, :] @ p)[:, :, 0] * content
            if sources:
                weighted = weights.sum(-1) > 1e-12
                probs = torch.where(weighted[..., None], weights, torch.ones_like(weights)).flatten(0, 1)
                draws = torch.multinomial(probs, sources, replacement=True, generator=gen)
                picked[layer] = draws.view(batch, n_heads, sources)
                source_weights[layer] = weighted
            else:
                source_weights[layer] = weights
        return hook

    def use_v(layer: int):
        def hook(resid: Tensor, hook: Any) -> None:  # block output: after hook_v and hook_pattern everywhere
            v = v_of.pop(layer)
            heads = copying.kv_head_of(v.shape[2])
            if sources:
                idx = picked[layer]
                v_drawn[layer] = v[bi, idx, heads[None, :, None]].float()  # [batch, head_index, source, d_head]
                tok_drawn[layer] = tokens[bi, idx]
                targets_drawn[layer] = targets[bi, idx]  # [batch, head_index, source, target]
                valid_drawn[layer] = valid[idx]
                return
            per_head = v[:, :, heads].float().permute(2, 0, 1, 3).reshape(n_heads, batch * seq, -1)
            # Column 0: the source's own token (copying); then the offset targets (offset copying).
            own = torch.cat([tokens[..., None], targets], -1).reshape(1, batch * seq, -1).expand(n_heads, -1, -1)
            scores = copying.source_scores(layer, per_head, own).view(n_heads, batch, seq, -1).transpose(0, 1)
            weights = source_weights[layer]
            out["copying"][layer] = (weights * scores[..., 0]).sum(-1) / weights.sum(-1).clamp_min(1e-12)
            # As `induction.heads.offsets.offset_copying`: sources whose target is not content drop out.
            num = torch.einsum("bhk,bhkt,kt->bht", weights, scores[..., 1:], valid.float())
            den = torch.einsum("bhk,kt->bht", weights, valid.float())
            positive = torch.where(den > 0, num / den.clamp_min(1e-12), float("nan"))
            out["offset_copying"][layer] = offset_copying_per_prompt(positive, offsets)
        return hook

    hooks = []
    for layer in range(n_layers):
        hooks += [(v_name(layer), keep_v(layer)), (pattern_name(layer), reduce_pattern(layer)),
                  (resid_post_name(layer), use_v(layer))]
    hooks.append((UNEMBED_IN, lambda x, hook: x[:, -1:]))  # no [batch, pos, d_vocab] logits: nothing reads them
    with model.hooks(fwd_hooks=hooks):
        model(tokens)
    missing = [layer for layer in range(n_layers) if source_weights[layer] is None
               or (v_drawn[layer] is None and out["copying"][layer] is None)]
    if missing:
        raise RuntimeError(f"the attention hooks the detector reads (hook_pattern, hook_v, hook_resid_post) did not "
                           f"fire on layers {missing} of this model")
    scores = {name: torch.stack(values, dim=1) for name, values in out.items() if values[0] is not None}
    if not sources:
        return scores, None
    draws = SourceDraws(v=torch.stack(v_drawn), tokens=torch.stack(tok_drawn), weighted=torch.stack(source_weights, dim=1),
                        targets=torch.stack(targets_drawn), valid=torch.stack(valid_drawn), offsets=tuple(offsets))
    return scores, draws


def final_norm_matrix(model: TransformerBridge) -> Float[Tensor, "d_model d_model"]:
    """The final norm as a matrix N (row i = norm(e_i)), its scale frozen at 1 and its bias removed.

    It is `circuits.through_final_norm` (the bridge's own norm) applied to the basis vectors, so a
    LayerNorm centres and weights, an RMSNorm weights, and no norm is the identity, with no special case.
    """
    d_model = int(model.cfg.d_model)
    W_U = model.W_U
    basis = torch.eye(d_model, device=W_U.device, dtype=W_U.dtype)[:, None, None, :]  # [part, batch, pos, d_model]
    scale = torch.ones(1, 1, 1, device=W_U.device, dtype=W_U.dtype) if FINAL_SCALE in model.hook_dict else None
    return through_final_norm(model, basis, scale).reshape(d_model, d_model).float()


class CopyingMap:
    """Source copying scores (module docstring) through each head's map ``W_O N W_U``, in float32.

    ``W_O N`` is formed once ([layer, head_index, d_head, d_model]); each vocabulary chunk's
    ``W_O N W_U[:, chunk]`` ([head_index, d_head, chunk]) once per call, so a source costs d_head x
    d_vocab (not d_model x d_vocab) and every intermediate stays within `COPYING_CHUNK_ELEMENTS`.
    The logits' mean over the vocabulary is linear in v: ``v . (W_O N mean_c W_U[:, c])``.
    """

    def __init__(self, model: TransformerBridge) -> None:
        with torch.no_grad():
            self.W_ON = model.W_O.detach().float() @ final_norm_matrix(model)  # [layer, head_index, d_head, d_model]
            self.W_U = model.W_U.detach().float()  # [d_model, d_vocab]
            mean_unembed = self.W_U.mean(-1).double()  # [d_model]
            self.mean_map = self.W_ON.double() @ mean_unembed  # [layer, head_index, d_head]: v -> mean logit

    def kv_head_of(self, n_kv: int) -> Tensor:
        """The kv head each query head reads (grouped-query attention: h // (n_heads / n_kv))."""
        n_heads = self.W_ON.shape[1]
        return torch.arange(n_heads, device=self.W_ON.device) // (n_heads // n_kv)

    @torch.no_grad()
    def source_scores(
        self,
        layer: int,
        v: Float[Tensor, "head_index source d_head"],
        own: Int[Tensor, "head_index source"] | Int[Tensor, "head_index source target"],
    ) -> Float[Tensor, "head_index source"] | Float[Tensor, "head_index source target"]:
        """Each source's copying score: relu(c[t])/max(relu(c)) - relu(-c[t])/max(relu(-c)), where
        c is the mean-centred ``v W_O N W_U`` and t the source's own token (module docstring), or
        each of several tokens t (`own` [head_index, source, target]: one logit pass serves them all).

        Streams the vocabulary in chunks (sources in blocks within a chunk), keeping the running
        max, min and own-token logit; the max and the own logit come from the same numbers, so a
        head that raises its own token most scores exactly 1.
        """
        n_heads, n_src, d_head = v.shape
        single = own.dim() == 2
        own = own[..., None] if single else own
        d_model, d_vocab = self.W_U.shape
        W = self.W_ON[layer].reshape(n_heads * d_head, d_model)
        budget = COPYING_CHUNK_ELEMENTS
        width = max(1, min(d_vocab, budget // (n_heads * max(d_head, min(n_src, 256)))))  # vocabulary columns
        block = max(1, budget // (n_heads * width))  # sources per logit block
        top = torch.full(own.shape[:2], -torch.inf, device=v.device)
        bottom = torch.full(own.shape[:2], torch.inf, device=v.device)
        own_logit = torch.zeros(own.shape, device=v.device)
        for c0 in range(0, d_vocab, width):
            c1 = min(d_vocab, c0 + width)
            head_map = (W @ self.W_U[:, c0:c1]).view(n_heads, d_head, c1 - c0)
            for s0 in range(0, n_src, block):
                s1 = min(n_src, s0 + block)
                logits = torch.bmm(v[:, s0:s1], head_map)  # [head_index, source, chunk]
                low, high = torch.aminmax(logits, dim=-1)
                top[:, s0:s1] = torch.maximum(top[:, s0:s1], high)
                bottom[:, s0:s1] = torch.minimum(bottom[:, s0:s1], low)
                ob = own[:, s0:s1]
                here = logits.gather(-1, (ob - c0).clamp(0, c1 - c0 - 1))
                own_logit[:, s0:s1] = torch.where((ob >= c0) & (ob < c1), here, own_logit[:, s0:s1])
        mean = torch.einsum("hsd,hd->hs", v.double(), self.mean_map[layer])[..., None]
        top, bottom = top[..., None], bottom[..., None]
        own_c = own_logit.double() - mean
        rise, fall = (top.double() - mean).clamp_min(1e-30), (mean - bottom.double()).clamp_min(1e-30)
        score = torch.where(flat_logits(top, bottom), 0.0, own_c.clamp_min(0) / rise - (-own_c).clamp_min(0) / fall)
        return (score[..., 0] if single else score).float()


@torch.no_grad()
def sampled_copying(
    copying: CopyingMap, draws: SourceDraws
) -> tuple[Float[Tensor, "batch layer head_index"], Float[Tensor, "batch layer head_index"],
           Float[Tensor, "batch layer head_index offset"]]:
    """Per-prompt copying estimates (the mean of the drawn sources' scores; 0 where no source was
    weighted) and the sample variance of those scores, [prompt, layer, head_index] each; and the
    offset copying estimates [prompt, layer, head_index, offset]: per d, the mean of the drawn
    sources' scores on their offset-d targets over the draws whose target is content (the ratio
    estimate of `induction.heads.offsets.offset_copying`; NaN where none is, or nothing was weighted, or d < 1)."""
    n_layers, n_prompts, n_heads, n_src, d_head = draws.v.shape
    own = torch.cat([draws.tokens[..., None], draws.targets], -1)  # [layer, prompt, head_index, source, 1 + target]
    scores = torch.stack([
        copying.source_scores(
            layer,
            draws.v[layer].transpose(0, 1).reshape(n_heads, n_prompts * n_src, d_head),
            own[layer].transpose(0, 1).reshape(n_heads, n_prompts * n_src, -1),
        ).view(n_heads, n_prompts, n_src, -1)
        for layer in range(n_layers)
    ]).permute(2, 0, 1, 3, 4)  # [prompt, layer, head_index, source, 1 + target]
    zero = torch.zeros((), device=scores.device)
    mean = torch.where(draws.weighted, scores[..., 0].mean(-1), zero)
    variance = torch.where(draws.weighted, scores[..., 0].var(-1), zero)
    valid = draws.valid.permute(1, 0, 2, 3, 4).float()  # [prompt, layer, head_index, source, target]
    den = valid.sum(-2)
    positive = (scores[..., 1:] * valid).sum(-2) / den.clamp_min(1.0)
    positive = torch.where((den > 0) & draws.weighted[..., None], positive, float("nan"))
    return mean, variance, offset_copying_per_prompt(positive, draws.offsets)


@torch.no_grad()
def copying_ov_scores(model: TransformerBridge) -> Float[Tensor, "layer head_index"]:
    """sum(eig)/sum(|eig|) of each head's full OV circuit W_E W_V W_O W_U (Elhage et al. 2021)."""
    W_V = model.W_V.detach().double()  # [layer, head_index, d_model, d_head]
    W_O = model.W_O.detach().double()  # [layer, head_index, d_head, d_model]
    if W_V.shape[1] != W_O.shape[1]:
        W_V = W_V.repeat_interleave(W_O.shape[1] // W_V.shape[1], dim=1)
    W_U, W_E = model.W_U.detach(), model.W_E.detach()
    UE = torch.zeros(W_U.shape[0], W_U.shape[0], dtype=torch.float64, device=W_U.device)  # [d_model, d_model]
    step = max(1, COPYING_CHUNK_ELEMENTS // W_U.shape[0])  # vocabulary chunks: no float64 copy of W_U or W_E
    for c0 in range(0, W_U.shape[1], step):
        UE += W_U[:, c0 : c0 + step].double() @ W_E[c0 : c0 + step].double()
    small = W_O @ UE @ W_V  # [layer, head_index, d_head, d_head]; same nonzero spectrum as the VxV circuit
    eig = torch.linalg.eigvals(small)
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()


def bootstrap_intervals(
    per_prompt: dict[str, Tensor], n_bootstrap: int, level: float, seed: int = 0
) -> dict[str, Tensor]:
    """`induction.common.stats.bootstrap_ci` over prompts of each score's mean: name -> [..., 2]."""
    out = {}
    for name, values in per_prompt.items():
        interval = bootstrap_ci(values, n_bootstrap, level, seed)
        if interval is not None:
            out[name] = torch.from_numpy(interval).float()
    return out


def top_prefix_heads(
    model: TransformerBridge, n_heads: int | None = None, seed: int = 0, n_prompts: int = 32
) -> tuple[list[tuple[int, int]], list[float]]:
    """The `n_heads` heads with the highest prefix-matching score, strongest first, and their scores.

    `n_heads=None` takes as many as the detector flags as induction heads (at least 1).
    """
    scores = score_heads(model, ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=n_prompts, seed=seed), n_bootstrap=0))
    if n_heads is None:
        n_heads = max(1, len(scores.induction_heads()))
    total = scores.n_layers * scores.n_heads
    if not 1 <= n_heads <= total:
        raise ValueError(f"number of heads must be in [1, {total}], got {n_heads}")
    flat = scores.prefix_matching.flatten()
    order = flat.argsort(descending=True)[:n_heads].tolist()
    return [(i // scores.n_heads, i % scores.n_heads) for i in order], [float(flat[i]) for i in order]
