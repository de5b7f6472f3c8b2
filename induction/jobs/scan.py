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
from induction.heads.offsets import ImpliedCircuit, implied_circuit
from induction.heads.scores import HeadScores, ScoreConfig, build_prompts, score_heads
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
    """

    detector: ScoreConfig = field(default_factory=ScoreConfig)
    icl: ICLConfig | None = field(default_factory=ICLConfig)
    freqs: str | os.PathLike[str] | None = None

    @property
    def seed(self) -> int:
        return self.detector.prompts.seed

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.to_dict(), "icl": None if self.icl is None else self.icl.to_dict(),
                "freqs": None if self.freqs is None else str(self.freqs)}


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
    circuits = implied_circuits(model, scores, prompts)
    scores = scores_on_cpu(scores)
    icl = icl_score(model, cfg.icl, progress=progress) if cfg.icl is not None else None
    info = model_info(model)
    measured = None if icl is None else {k: v for k, v in asdict(icl).items()
                                         if k in ("early_pos", "late_pos", "n_sequences", "seq_len", "data")}
    settings = {**cfg.to_dict(), "icl_measured": measured, "copying_estimate": scores.copying_method}
    prov = provenance(info.spec, info.checkpoint, cfg.seed, settings, time.perf_counter() - start, **placement(model))
    return ScanReport(model=info.spec, checkpoint=info.checkpoint, scores=scores, icl=icl, provenance=prov,
                      circuits=circuits)


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
