"""What runs per checkpoint: its scores, ICL score, held-out loss (and ablation effects), and the
check that a cached result is whole."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.heads.records import HeadTable
from induction.heads.scores import score_heads
from induction.inputs.prompts import read_token_freqs
from induction.inputs.streams import sample_stream
from induction.jobs.plans import check_plan, track_phases
from induction.jobs.track.config import TrackConfig
from induction.loading.cache import ResultCache
from induction.loading.models import ModelRef
from induction.loading.revisions import release_revision
from induction.measures.audit import checkpoint_audit_data
from induction.measures.effects import HeadSetEffect, icl_head_effects, icl_head_set_effect
from induction.measures.heldout import held_out_count, held_out_stream
from induction.measures.icl import icl_score, icl_tokens
from induction.measures.losses import per_token_loss


def score_checkpoint(model: TransformerBridge, cfg: TrackConfig, held_out_seed: int,
                     token_freqs: torch.Tensor | None = None) -> dict[str, Any]:
    """Head scores, ICL score and held-out loss of one model: the cached part of a checkpoint.

    The held-out batch comes from the model's recorded training stream (`induction.inputs.streams`), else
    from the synthetic stream over its vocabulary (`induction.measures.icl.default_stream_config`).
    With `cfg.ablate`, each head record also has ``ablation_effect`` on the ICL score's own
    sequences, and ``ablation`` holds the method and the unablated ICL score of that computation.
    """
    scores = score_heads(model, cfg.scan.detector, token_freqs=token_freqs)
    icl = icl_score(model, cfg.scan.icl) if cfg.scan.icl is not None else None
    stream = held_out_stream(model)
    tokens = sample_stream(stream, held_out_count(cfg.held_out_sequences, stream), torch.Generator(device="cpu").manual_seed(held_out_seed))
    held_out = per_token_loss(model, tokens)[:, 1:].mean()
    out = {"heads": scores.to_records(), "icl_score": None if icl is None else icl.score,
           "icl": None if icl is None else icl.to_dict(), "held_out_loss": float(held_out),
           "icl_per_sequence": None if icl is None else icl.per_sequence}  # for `transience_of`
    if cfg.ablate is not None:
        icl_seqs, _ = icl_tokens(model, cfg.scan.icl)  # the sequences icl_score just read
        baseline, effects = icl_head_effects(model, icl_seqs, cfg.ablate, seed=cfg.scan.seed)
        for rec in out["heads"]:
            rec["ablation_effect"] = float(effects[rec["layer"], rec["head"]])
        out["ablation"] = {"method": cfg.ablate, "baseline": baseline}
    return out


def valid_result(result: dict[str, Any], ablate: str | None = None) -> bool:
    """Whether a cached checkpoint result is whole: its heads a whole `HeadTable` (every (layer, head)
    of a full grid once, finite scores, both flags), a finite held-out loss (and ICL score, when there
    is one); with `ablate`, a finite ablation effect for every head and the method's unablated baseline."""
    heads = result.get("heads")
    if not isinstance(heads, list) or not HeadTable(heads).is_whole(("ablation_effect",) if ablate else ()):
        return False
    try:
        numbers = [float(result["held_out_loss"])]
        if result.get("icl_score") is not None:
            numbers.append(float(result["icl_score"]))
        if ablate is not None:
            if result["ablation"]["method"] != ablate:
                return False
            numbers.append(float(result["ablation"]["baseline"]))
    except (KeyError, TypeError, ValueError):
        return False
    return all(math.isfinite(x) for x in numbers)


def check_track_memory(model: ModelRef | TransformerBridge, cfg: TrackConfig) -> None:
    """Refuse, in one line naming the setting to lower, a checkpoint whose scoring would not fit
    (`induction.jobs.plans.track_phases`: scan's phases, the held-out batch, with `ablate` one forward
    over all the ICL sequences, and the audit's reference weights); before loading from its config."""
    held_len = held_n = None
    if isinstance(model, TransformerBridge):
        stream = held_out_stream(model)
        held_len, held_n = int(stream.seq_len), held_out_count(cfg.held_out_sequences, stream)
    check_plan("track", model, lambda shape, dtype, budget: track_phases(shape, cfg, dtype, held_len, held_n),
               extra_parameter_copies=1)


def score_task(ref: ModelRef, cfg: TrackConfig, held_out_seed: int, cache_dir: Path | None, name: str,
               identity: dict[str, Any], threads: int,
               reference: tuple[ModelRef, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Score one checkpoint and write its cache entry: the unit of work and of resumption.

    `reference`: the first checkpoint (its ref and identity), for the audit's distance
    (`induction.measures.audit`).

    The same function runs in this process and in Ray workers (`induction.jobs.executor`), with the same
    torch thread count, so both give the same numbers; the entry is written (atomically) by whoever
    computed it, so a driver interrupted after a task finished loses nothing.
    """
    torch.set_num_threads(threads)  # Ray workers are reused and keep the count torch chose at import
    freqs = read_token_freqs(cfg.scan.freqs) if cfg.scan.freqs is not None else None
    check_track_memory(ref, cfg)
    model = ref.load()
    check_track_memory(model, cfg)
    torch.manual_seed(cfg.scan.seed)
    scored = score_checkpoint(model, cfg, held_out_seed, freqs)
    scored["audit"] = checkpoint_audit_data(model, reference, identity, ref)
    ResultCache(cache_dir).write(name, identity, scored)
    del model
    release_hub_weights(ref, cfg)
    return json.loads(json.dumps(scored))  # as a cached result reads back: the same floats either way


def release_hub_weights(ref: ModelRef, cfg: TrackConfig) -> None:
    """With `cfg.hub.keep_weights` False, delete a scored hub revision from the Hugging Face cache, so
    the disk holds one revision at a time (`induction.loading.revisions.release_revision`)."""
    if ref.revision is not None and not cfg.hub.keep_weights:
        release_revision(ref.spec, ref.revision)


def valid_set_result(result: dict[str, Any]) -> bool:
    """Whether a cached joint-ablation result is whole (finite numbers, a control or its reason)."""
    try:
        effect = HeadSetEffect.from_dict(result)
        numbers = [effect.baseline, effect.joint_effect, *map(float, effect.control_effects or [])]
    except (KeyError, TypeError, ValueError):
        return False
    has_control = effect.control_heads is not None and len(effect.control_heads) == len(effect.control_effects or [])
    return all(math.isfinite(x) for x in numbers) and (has_control or bool(effect.control_unavailable))


def induction_set_task(ref: ModelRef, cfg: TrackConfig, heads: list[tuple[int, int]], cache_dir: Path | None,
                       name: str, identity: dict[str, Any], threads: int) -> dict[str, Any]:
    """Ablate `heads` together (and the layer-matched random sets) at one checkpoint, on the ICL
    score's sequences; cache and return the result (`score_task`'s counterpart for the second pass)."""
    torch.set_num_threads(threads)
    model = ref.load()
    check_track_memory(model, cfg)
    tokens, _ = icl_tokens(model, cfg.scan.icl)
    effect = icl_head_set_effect(model, tokens, heads, cfg.ablate, cfg.ablate_draws, cfg.scan.seed)
    result = json.loads(json.dumps(effect.to_dict()))  # tuples as lists: as it reads back from the cache
    ResultCache(cache_dir).write(name, identity, result)
    del model
    release_hub_weights(ref, cfg)
    return result
