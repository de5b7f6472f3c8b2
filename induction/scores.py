"""The head detector: prefix-matching, copying, previous-token and duplicate-token scores per head.

Definitions (on repeated-random-token prompts, `induction.prompts`; BOS never counts):
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
  neither. (Normalising by the largest change rather than by the summed ReLU mass keeps the score
  from shrinking with the vocabulary: with the sum, the induction heads of the default toy model,
  which raise the copied token above every other, scored ~0.06 because diffuse small changes to the
  other 127 tokens outweigh it.) A head's score is the attention-weighted mean over the sources it
  reads from repeated-token queries (BOS excluded).
- copying_ov (Elhage et al. 2021): sum(eig)/sum(|eig|) of the full OV circuit W_E W_V W_O W_U, whose
  nonzero eigenvalues are those of the small matrix W_O W_U W_E W_V (d_head x d_head).
- is_induction: prefix_matching >= prefix_threshold and copying >= copying_threshold.

All heads are scored in one forward per prompt batch, caching only `hook_pattern` and `hook_v`.
Every score comes with a bootstrap confidence interval over prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from circuits import through_final_norm
from circuits.hooks import FINAL_SCALE, pattern_name, v_name
from induction.checks import check_min, check_range
from induction.models import model_info
from induction.prompts import (
    PromptError,
    RepeatedTokens,
    RepeatedTokensConfig,
    duplicate_mask,
    prefix_mask,
    previous_mask,
    repeated_random_tokens,
)
from induction.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_ci

SCORE_NAMES = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
_PROMPT_SCORES = ("prefix_matching", "copying", "previous_token", "duplicate_token")


@dataclass
class ScoreConfig:
    """Settings of the head detector.

    Attributes:
        prompts: the repeated-random-token prompts (`RepeatedTokensConfig`).
        batch_size: prompts per forward pass.
        prefix_threshold: minimum prefix-matching score of an induction head, in [0, 1]. A head
            that attends at a fixed offset scores ~1/(number of distinct periods) at most.
        copying_threshold: minimum copying score of an induction head, in [-1, 1].
        n_bootstrap: bootstrap resamples (over prompts) for the confidence intervals; 0 disables.
        ci_level: confidence level of the intervals, in (0, 1).
    """

    prompts: RepeatedTokensConfig = field(default_factory=RepeatedTokensConfig)
    batch_size: int = 16
    prefix_threshold: float = 0.4
    copying_threshold: float = 0.5
    n_bootstrap: int = DEFAULT_RESAMPLES
    ci_level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        check_min("batch_size", self.batch_size, 1)
        check_range("prefix_threshold", self.prefix_threshold, 0, 1)
        check_range("copying_threshold", self.copying_threshold, -1, 1)
        check_min("n_bootstrap", self.n_bootstrap, 0)
        if not 0.0 < self.ci_level < 1.0:
            raise ValueError(f"ci_level must be in (0, 1), got {self.ci_level}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeadScores:
    """Per-head scores, each a [layer, head_index] tensor; `ci[name]` is [layer, head_index, 2]."""

    prefix_matching: Float[Tensor, "layer head_index"]
    copying: Float[Tensor, "layer head_index"]
    copying_ov: Float[Tensor, "layer head_index"]
    previous_token: Float[Tensor, "layer head_index"]
    duplicate_token: Float[Tensor, "layer head_index"]
    is_induction: Bool[Tensor, "layer head_index"]
    ci: dict[str, Tensor]
    per_prompt: dict[str, Tensor]
    config: ScoreConfig

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

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per head (CONTRACT's HEAD), with `<score>_ci` intervals where available."""
        out = []
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                rec: dict[str, Any] = {"layer": layer, "head": head}
                for name in SCORE_NAMES:
                    rec[name] = float(getattr(self, name)[layer, head])
                rec["is_induction"] = bool(self.is_induction[layer, head])
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
    """Score every attention head of `model` (see module docstring for the definitions).

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
    per_prompt = {name: [] for name in _PROMPT_SCORES}
    n = prompts.tokens.shape[0]
    batches = range(0, n, cfg.batch_size)
    for start in tqdm(batches, desc="scoring heads", disable=not progress, leave=False):
        tokens = prompts.tokens[start : start + cfg.batch_size]
        for name, value in _score_batch(model, tokens, prompts.first_content_pos).items():
            per_prompt[name].append(value)
    stacked = {name: torch.cat(values) for name, values in per_prompt.items()}
    means = {name: values.mean(0) for name, values in stacked.items()}
    ci = bootstrap_intervals(stacked, cfg.n_bootstrap, cfg.ci_level, seed=cfg.prompts.seed)
    ov = copying_ov_scores(model)
    is_induction = (means["prefix_matching"] >= cfg.prefix_threshold) & (means["copying"] >= cfg.copying_threshold)
    return HeadScores(
        prefix_matching=means["prefix_matching"],
        copying=means["copying"],
        copying_ov=ov,
        previous_token=means["previous_token"],
        duplicate_token=means["duplicate_token"],
        is_induction=is_induction,
        ci=ci,
        per_prompt=stacked,
        config=cfg,
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


@torch.no_grad()
def _score_batch(model: TransformerBridge, tokens: Int[Tensor, "batch pos"], first: int) -> dict[str, Tensor]:
    """Per-prompt scores [batch, layer, head_index] from one forward pass."""
    n_layers = model.cfg.n_layers
    names = {pattern_name(layer) for layer in range(n_layers)} | {v_name(layer) for layer in range(n_layers)}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    seq = tokens.shape[1]
    dup = duplicate_mask(tokens, first).float()
    pre = prefix_mask(tokens, first).float()
    prev = previous_mask(seq, first, tokens.device).float()
    rows = pre.any(-1).float()  # queries whose token occurred before: the repeated part
    n_rows = rows.sum(-1).clamp_min(1.0)  # [batch]
    prev_rows = prev.any(-1).float()
    content = (torch.arange(seq, device=tokens.device) >= first).float()
    out: dict[str, list[Tensor]] = {name: [] for name in _PROMPT_SCORES}
    for layer in range(n_layers):
        pattern = cache[pattern_name(layer)].float()  # [batch, head_index, query_pos, key_pos]
        out["prefix_matching"].append(torch.einsum("bhqk,bqk->bh", pattern, pre) / n_rows[:, None])
        out["duplicate_token"].append(torch.einsum("bhqk,bqk->bh", pattern, dup) / n_rows[:, None])
        out["previous_token"].append(torch.einsum("bhqk,qk->bh", pattern, prev) / prev_rows.sum().clamp_min(1.0))
        v = cache[v_name(layer)]  # [batch, key_pos, head_index(kv), d_head]
        source_score = copy_source_scores(model, layer, v, tokens)  # [batch, head_index, key_pos]
        weights = pattern * rows[:, None, :, None] * content[None, None, None, :]
        num = torch.einsum("bhqk,bhk->bh", weights, source_score)
        out["copying"].append(num / weights.sum((-1, -2)).clamp_min(1e-12))
    return {name: torch.stack(values, dim=1) for name, values in out.items()}


def copy_source_scores(
    model: TransformerBridge,
    layer: int,
    v: Float[Tensor, "batch key_pos kv_head d_head"],
    tokens: Int[Tensor, "batch key_pos"],
    max_elements: int = 2**24,
) -> Float[Tensor, "batch head_index key_pos"]:
    """Each source's copying score: its own token's mean-centred direct-logit change relative to the largest (module docstring)."""
    n_heads = model.cfg.n_heads
    if v.shape[2] != n_heads:  # grouped-query attention: each kv head serves n_heads / n_kv heads
        v = v.repeat_interleave(n_heads // v.shape[2], dim=2)
    W_O = model.W_O[layer].detach()  # [head_index, d_head, d_model]
    W_U = model.W_U.detach()  # [d_model, d_vocab]
    out = torch.einsum("bkhd,hdm->hbkm", v.float(), W_O.float())  # [head_index, batch, key_pos, d_model]
    # The final norm, linearised with its scale frozen at 1 (the ratios below do not depend on it).
    scale = torch.ones(*out.shape[1:3], 1, device=out.device) if FINAL_SCALE in model.hook_dict else None
    out = through_final_norm(model, out.to(W_U.dtype), scale).float().transpose(0, 1)  # [batch, head_index, ...]
    batch, _, seq, d_model = out.shape
    flat = out.reshape(-1, d_model)
    own = tokens[:, None, :].expand(batch, n_heads, seq).reshape(-1)
    scores = torch.empty(flat.shape[0], device=flat.device)
    chunk = max(1, max_elements // W_U.shape[1])
    for i in range(0, flat.shape[0], chunk):
        logits = flat[i : i + chunk] @ W_U.float()
        centred = logits - logits.mean(-1, keepdim=True)
        pos, neg = centred.clamp_min(0), (-centred).clamp_min(0)
        idx = own[i : i + chunk, None]
        rel_pos = pos.gather(1, idx)[:, 0] / pos.amax(-1).clamp_min(1e-30)
        rel_neg = neg.gather(1, idx)[:, 0] / neg.amax(-1).clamp_min(1e-30)
        scores[i : i + chunk] = rel_pos - rel_neg
    return scores.reshape(batch, n_heads, seq)


@torch.no_grad()
def copying_ov_scores(model: TransformerBridge) -> Float[Tensor, "layer head_index"]:
    """sum(eig)/sum(|eig|) of each head's full OV circuit W_E W_V W_O W_U (Elhage et al. 2021)."""
    W_V = model.W_V.detach().double()  # [layer, head_index, d_model, d_head]
    W_O = model.W_O.detach().double()  # [layer, head_index, d_head, d_model]
    if W_V.shape[1] != W_O.shape[1]:
        W_V = W_V.repeat_interleave(W_O.shape[1] // W_V.shape[1], dim=1)
    UE = model.W_U.detach().double() @ model.W_E.detach().double()  # [d_model, d_model]
    small = W_O @ UE @ W_V  # [layer, head_index, d_head, d_head]; same nonzero spectrum as the VxV circuit
    eig = torch.linalg.eigvals(small)
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()


def bootstrap_intervals(
    per_prompt: dict[str, Tensor], n_bootstrap: int, level: float, seed: int = 0
) -> dict[str, Tensor]:
    """`induction.stats.bootstrap_ci` over prompts of each score's mean: name -> [..., 2]."""
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
