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
  float32 rounding of their size) scores 0, not the sign of rounding noise. (Normalised by the largest change, not by the summed ReLU mass,
  so that the score does not shrink with the vocabulary: README, "Design notes".) A prompt's score is the attention-weighted mean over the sources the
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
source is scored (exhaustive, `copying_se` = 0) with `copying_sources` = 0 or None, at a cost that
grows with the number of sources (README, "What a scan costs").

Every score comes with a bootstrap confidence interval over prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import UNEMBED_IN, pattern_name, resid_post_name, v_name
from circuits.progress import progress_bar
from induction.common.stats import bootstrap_ci
from induction.heads.config import ScoreConfig
from induction.heads.copying import (
    CopyingMap,
    SourceDraws,
    copying_ov_scores,
    offset_copying_per_prompt,
    sampled_copying,
)
from induction.heads.offsets import OffsetScores, offset_attention, offset_keys
from induction.heads.records import HeadScores
from induction.inputs.prompts import (
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

_PROMPT_SCORES = ("prefix_matching", "copying", "previous_token", "duplicate_token")


_OFFSET_SCORES = ("offset_attention", "offset_copying")


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
    for start in progress_bar(batches, desc="scoring heads", enabled=progress, stage=True, leave=False):
        tokens = prompts.tokens[start : start + cfg.batch_size].to(device)
        scores, draws = _PromptBatch(model, tokens, prompts.first_content_pos, copying, sources, gen, cfg.offsets).run()
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


@dataclass
class _LayerScores:
    """What one layer's hooks leave for the batch's result (`_PromptBatch`)."""

    scores: dict[str, Tensor] = field(default_factory=dict)  # [batch, head_index] (offset ones: [..., offset])
    weights: Tensor | None = None  # [batch, head_index, key_pos]: attention each source gets, or (sampled) whether any
    picked: Tensor | None = None  # [batch, head_index, source]: the drawn sources (sampled copying)
    drawn: dict[str, Tensor] = field(default_factory=dict)  # the drawn sources' v, tokens, targets, valid


class _PromptBatch:
    """One forward over a prompt batch, scored by hooks as it runs (module docstring): each layer's
    `hook_pattern` is reduced at once to the attention scores and the source weights, its `hook_v`
    kept until the block ends, where the sources are scored (exhaustively) or drawn (sampled)."""

    def __init__(self, model: TransformerBridge, tokens: Int[Tensor, "batch pos"], first: int, copying: CopyingMap,
                 sources: int, gen: torch.Generator | None, offsets: Sequence[int]) -> None:
        self.model, self.tokens, self.copying, self.sources, self.gen = model, tokens, copying, sources, gen
        self.offsets = tuple(offsets)
        self.n_layers, self.n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
        self.batch, seq = tokens.shape
        prefix = prefix_mask(tokens, first)
        # The masks are sparse (a query has a few earlier occurrences): sum the pattern at their entries only.
        self.prefix_at = prefix.nonzero(as_tuple=True)  # (batch, query_pos, key_pos) indices
        self.duplicate_at = duplicate_mask(tokens, first).nonzero(as_tuple=True)
        self.rows = prefix.any(-1).float()  # queries whose token occurred before: the repeated part
        self.n_rows = self.rows.sum(-1).clamp_min(1.0)[:, None]  # [batch, 1]
        self.after = previous_mask(seq, first, tokens.device).nonzero(as_tuple=True)  # (query, query - 1) pairs
        self.content = (torch.arange(seq, device=tokens.device) >= first).float()
        self.bi = torch.arange(self.batch, device=tokens.device)[:, None, None]
        self.keys = offset_keys(tokens, self.offsets, first)
        self.targets, self.valid = offset_targets(tokens, self.offsets, first)  # [batch, pos, target], [pos, target]
        self.layers = [_LayerScores() for _ in range(self.n_layers)]
        self.v_of: dict[int, Tensor] = {}

    def _summed_at(self, p: Tensor, at: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        b, q, k = at
        return torch.zeros(self.batch, self.n_heads, device=p.device).index_add_(0, b, p[b, :, q, k])  # [batch, head_index]

    def keep_v(self, layer: int, v: Tensor) -> None:  # [batch, pos, kv_head, d_head]
        self.v_of[layer] = v

    def reduce_pattern(self, layer: int, pattern: Tensor) -> None:  # [batch, head_index, query_pos, key_pos]
        p, out = pattern.float(), self.layers[layer]
        out.scores["prefix_matching"] = self._summed_at(p, self.prefix_at) / self.n_rows
        out.scores["duplicate_token"] = self._summed_at(p, self.duplicate_at) / self.n_rows
        out.scores["previous_token"] = p[:, :, self.after[0], self.after[1]].sum(-1) / max(1, self.after[0].numel())
        out.scores["offset_attention"] = offset_attention(p, self.keys)  # [batch, head_index, offset]
        # The attention each source gets from repeated queries: [batch, head_index, key_pos].
        weights = (self.rows[:, None, None, :] @ p)[:, :, 0] * self.content
        if not self.sources:
            out.weights = weights
            return
        weighted = weights.sum(-1) > 1e-12
        probs = torch.where(weighted[..., None], weights, torch.ones_like(weights)).flatten(0, 1)
        draws = torch.multinomial(probs, self.sources, replacement=True, generator=self.gen)
        out.picked = draws.view(self.batch, self.n_heads, self.sources)
        out.weights = weighted

    def use_v(self, layer: int) -> None:  # at the block's output: after hook_v and hook_pattern everywhere
        v, out = self.v_of.pop(layer), self.layers[layer]
        heads = self.copying.kv_head_of(v.shape[2])
        if self.sources:
            idx, bi = out.picked, self.bi
            out.drawn = {"v": v[bi, idx, heads[None, :, None]].float(),  # [batch, head_index, source, d_head]
                         "tokens": self.tokens[bi, idx], "targets": self.targets[bi, idx], "valid": self.valid[idx]}
            return
        batch, seq = self.tokens.shape
        per_head = v[:, :, heads].float().permute(2, 0, 1, 3).reshape(self.n_heads, batch * seq, -1)
        # Column 0: the source's own token (copying); then the offset targets (offset copying).
        own = torch.cat([self.tokens[..., None], self.targets], -1).reshape(1, batch * seq, -1).expand(self.n_heads, -1, -1)
        scores = self.copying.source_scores(layer, per_head, own).view(self.n_heads, batch, seq, -1).transpose(0, 1)
        weights = out.weights
        out.scores["copying"] = (weights * scores[..., 0]).sum(-1) / weights.sum(-1).clamp_min(1e-12)
        # As offset copying is defined (`induction.heads.offsets`): sources whose target is not content drop out.
        num = torch.einsum("bhk,bhkt,kt->bht", weights, scores[..., 1:], self.valid.float())
        den = torch.einsum("bhk,kt->bht", weights, self.valid.float())
        positive = torch.where(den > 0, num / den.clamp_min(1e-12), float("nan"))
        out.scores["offset_copying"] = offset_copying_per_prompt(positive, self.offsets)

    @torch.no_grad()
    def run(self) -> tuple[dict[str, Tensor], SourceDraws | None]:
        hooks = []
        for layer in range(self.n_layers):
            hooks += [(v_name(layer), lambda v, hook, layer=layer: self.keep_v(layer, v)),
                      (pattern_name(layer), lambda p, hook, layer=layer: self.reduce_pattern(layer, p)),
                      (resid_post_name(layer), lambda r, hook, layer=layer: self.use_v(layer))]
        hooks.append((UNEMBED_IN, lambda x, hook: x[:, -1:]))  # no [batch, pos, d_vocab] logits: nothing reads them
        with self.model.hooks(fwd_hooks=hooks):
            self.model(self.tokens)
        missing = [layer for layer, out in enumerate(self.layers) if out.weights is None
                   or (not out.drawn and "copying" not in out.scores)]
        if missing:
            raise RuntimeError(f"the attention hooks the detector reads (hook_pattern, hook_v, hook_resid_post) did "
                               f"not fire on layers {missing} of this model")
        names = [name for name in (*_PROMPT_SCORES, *_OFFSET_SCORES) if name in self.layers[0].scores]
        scores = {name: torch.stack([out.scores[name] for out in self.layers], dim=1) for name in names}
        if not self.sources:
            return scores, None
        drawn = {k: torch.stack([out.drawn[k] for out in self.layers]) for k in ("v", "tokens", "targets", "valid")}
        draws = SourceDraws(v=drawn["v"], tokens=drawn["tokens"], weighted=torch.stack([o.weights for o in self.layers], dim=1),
                            targets=drawn["targets"], valid=drawn["valid"], offsets=self.offsets)
        return scores, draws


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
