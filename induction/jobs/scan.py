"""`scan`: every head's detector scores and the model's ICL score (`induction scan MODEL`)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuits import composition_scores
from induction.common.provenance import provenance
from induction.heads.config import ScoreConfig
from induction.heads.implied import ImpliedCircuit, implied_circuit
from induction.heads.patterns import PatternConfig, head_label, head_patterns
from induction.heads.records import HeadScores
from induction.heads.scores import build_prompts, score_heads
from induction.inputs.prompts import RepeatedTokens, read_token_freqs
from induction.jobs.plans import check_plan, scan_phases
from induction.loading.devices import model_device, placement
from induction.loading.models import ModelLike, model_info, resolve_model
from induction.measures.icl import ICLConfig, icl_score
from induction.reports.scan import ScanReport


@dataclass
class ScanConfig:
    """Settings of `scan`.

    Attributes:
        detector: the head detector (`induction.heads.scores.ScoreConfig`: prompts, thresholds, bootstrap).
        icl: the ICL score's settings (`induction.measures.icl.ICLConfig`); None skips the ICL score.
        freqs: a token frequency table (JSON list, one count per token id) for the prompts'
            `exclude_top` / `exclude_bottom`; None: no table.
        patterns: heads ((layer, head) or "LxHy") whose attention patterns on the detector's prompts
            the report keeps (`induction.heads.patterns`), or ("induction",): the detected induction
            heads (the strongest prefix-matching head when there are none), or ("all",): every head;
            empty: none.
        pattern_view: how many prompts and how to pool them (`induction.heads.patterns.PatternConfig`).
    """

    detector: ScoreConfig = field(default_factory=ScoreConfig)
    icl: ICLConfig | None = field(default_factory=ICLConfig)
    freqs: str | os.PathLike[str] | None = None
    patterns: tuple[tuple[int, int] | str, ...] = ()
    pattern_view: PatternConfig = field(default_factory=PatternConfig)

    @property
    def seed(self) -> int:
        return self.detector.prompts.seed

    def to_dict(self) -> dict[str, Any]:
        out = {"detector": self.detector.to_dict(), "icl": None if self.icl is None else self.icl.to_dict(),
               "freqs": None if self.freqs is None else str(self.freqs)}
        if self.patterns:
            out["patterns"] = {"heads": [h if isinstance(h, str) else head_label(h) for h in self.patterns],
                               **asdict(self.pattern_view)}
        return out


def check_scan_memory(model: ModelLike, cfg: ScanConfig) -> None:
    """Refuse, in one line naming the setting to lower, a scan whose plan (`induction.jobs.plans`:
    prompts' tokens and scores, the detector's and the ICL score's forwards) would not fit; for a
    MODEL spec from its config.json, before any weights are loaded."""
    check_plan("scan", model, lambda shape, dtype, budget: scan_phases(shape, cfg, dtype))


def scores_on_cpu(scores: HeadScores) -> HeadScores:
    """`scores` with every tensor on the CPU, as reports hold them (figures and JSON read them there)."""
    moved = {f.name: getattr(scores, f.name).cpu() for f in fields(scores) if isinstance(getattr(scores, f.name), torch.Tensor)}
    o = scores.offsets
    offsets = replace(o, support=o.support.cpu(), attention=o.attention.cpu(), copying=o.copying.cpu(),
                      per_prompt={k: v.cpu() for k, v in o.per_prompt.items()})
    return replace(scores, **moved, offsets=offsets, ci={k: v.cpu() for k, v in scores.ci.items()},
                   per_prompt={k: v.cpu() for k, v in scores.per_prompt.items()})


def scan(model: ModelLike, cfg: ScanConfig | None = None, *, progress: bool = False) -> ScanReport:
    """Score every head of `model` (a bridge or a MODEL spec) and measure its ICL score."""
    cfg = cfg or ScanConfig()
    start = time.perf_counter()
    freqs = read_token_freqs(cfg.freqs) if cfg.freqs is not None else None
    if not isinstance(model, TransformerBridge):
        check_scan_memory(model, cfg)  # before loading: from the config alone
    model = resolve_model(model)
    check_scan_memory(model, cfg)
    torch.manual_seed(cfg.seed)
    prompts = build_prompts(model, cfg.detector.prompts, freqs)
    scores = score_heads(model, cfg.detector, prompts=prompts, progress=progress)
    patterns = head_patterns(model, pattern_heads(cfg.patterns, scores), prompts, cfg.pattern_view) if cfg.patterns else None
    circuits = implied_circuits(model, scores, prompts)
    scores = scores_on_cpu(scores)
    icl = icl_score(model, cfg.icl, progress=progress) if cfg.icl is not None else None
    info = model_info(model)
    measured = None if icl is None else {k: v for k, v in asdict(icl).items()
                                         if k in ("early_pos", "late_pos", "n_sequences", "seq_len", "data")}
    settings = {**cfg.to_dict(), "icl_measured": measured, "copying_estimate": scores.copying_method}
    if "commit" in info.meta:  # a hub model: the commit its revision resolved to (induction.loading.hub)
        settings["hub"] = {k: info.meta[k] for k in ("repo", "revision", "commit")}
    prov = provenance(info.spec, info.checkpoint, cfg.seed, settings, time.perf_counter() - start, **placement(model))
    return ScanReport(model=info.spec, checkpoint=info.checkpoint, scores=scores, icl=icl, provenance=prov,
                      circuits=circuits, patterns=patterns)


PATTERN_SETS = ("induction", "all")
"""Names `ScanConfig.patterns` may give instead of heads."""


def pattern_heads(requested: tuple, scores: HeadScores) -> list:
    """The heads `ScanConfig.patterns` names: as given, or the set one of `PATTERN_SETS` names."""
    if len(requested) == 1 and requested[0] in PATTERN_SETS:
        if requested[0] == "all":
            return [(layer, h) for layer in range(scores.n_layers) for h in range(scores.n_heads)]
        best = divmod(int(scores.prefix_matching.flatten().argmax()), scores.n_heads)
        return sorted(scores.induction_heads(), key=lambda lh: -float(scores.prefix_matching[lh])) or [best]
    bad = [h for h in requested if isinstance(h, str) and h in PATTERN_SETS]
    if bad:
        raise ValueError(f"patterns: {bad[0]!r} names a set of heads; give it alone, not among heads")
    return list(requested)


def implied_circuits(model: TransformerBridge, scores: HeadScores, prompts: RepeatedTokens) -> list[ImpliedCircuit]:
    """`induction.heads.offsets.implied_circuit` of every shifted induction head that has a layer below it,
    its layer-below heads' lags measured on the first `batch_size` prompts (one more forward, only
    when there is a shifted head)."""
    heads = [lh for lh in scores.shifted_induction_heads() if lh[0] >= 1]
    if not heads:
        return []
    tokens = prompts.tokens[: scores.config.batch_size].to(model_device(model))
    composition = composition_scores(model)
    return [implied_circuit(model, layer, head, int(scores.induction_offset[layer, head]), tokens,
                            prompts.first_content_pos, composition=composition) for layer, head in heads]
