"""Formation tracking: head scores, ICL score and held-out loss at every checkpoint of a run.

`track(run_dir)` scores each checkpoint of a run written by `induction.train` (Olsson et al. 2022,
argument 1: induction heads and in-context learning appear together, in a phase change early in
training); `track_revisions(spec, revisions)` does the same for a Hugging Face model published with
training checkpoints (Pythia ``step1000``, stanford-crfm ``checkpoint-400``).

Per checkpoint:
- heads: `induction.scores.score_heads` (prefix-matching, copying, ... per head, CONTRACT's HEAD);
- icl_score: `induction.icl.icl_score` with the same settings as ``induction scan``, so a tracked
  checkpoint and a scanned one give the same number;
- held_out_loss: the mean next-token loss on a fixed batch of the run's own data stream (for models
  without one, the synthetic stream over their vocabulary), drawn with a seed different from the
  training seed (training seed + `HELD_OUT_SEED_OFFSET`).

Each checkpoint's result is cached as JSON in ``<run>/track/<settings-key>/step_000123.json``
(written atomically); the key hashes every scoring setting and the source of the scoring modules,
and each file records a hash of the checkpoint's weights, so changed settings, changed definitions
or retrained weights are recomputed, and a repeated or interrupted `track` recomputes nothing
already done.

Phase change (`detect_phase_change`): on the log-step axis (checkpoints with step >= 1), the joint
progress g = mean(u, v) of u = best prefix-matching (max over heads) min-max normalised to [0, 1] and
v = the ICL score's fall, normalised the same way (left out when the ICL score moves by less than
`min_icl_range` nats). A logistic g ~ a + b * sigmoid((log step - x0) / w) with b > 0 is fitted by
least squares (grid search over x0 and w; a, b in closed form). ``step`` = exp(x0), the steepest
point of the fit; ``start_step`` / ``end_step`` = exp(x0 -/+ w ln 9), where the change is 10% / 90%
complete (clipped to the tracked steps). None when the best prefix-matching score never reaches
`threshold` (default: the detector's prefix threshold, 0.4), as for a 1-layer model, or when there
are fewer than 3 checkpoints with step >= 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from induction.fileio import write_json_atomic
from induction.icl import default_stream_config, icl_score, per_token_loss
from induction.models import WEIGHTS_FILE, load_model, model_info, read_manifest, run_checkpoints
from induction.scores import ScoreConfig, score_heads
from induction.tasks import data_config_from_dict, sample_stream

TRACK_DIR = "track"
TRACK_FORMAT_VERSION = 1
HELD_OUT_SEED_OFFSET = 1_000_003  # held-out seed = training seed + this: never the training stream

Curve = Union[Sequence[float], Sequence[int], np.ndarray]  # one value per checkpoint


@dataclass
class TrackConfig:
    """Settings of `track` / `track_revisions`; every field is part of the cache key.

    Attributes:
        detector: the head detector's settings (`induction.scores.ScoreConfig`).
        icl: compute the ICL score (True); False leaves it None and the phase change uses prefix
            matching alone.
        text: a text file for the ICL score (models with a tokenizer), as ``induction scan --text``;
            None: the model's synthetic stream.
        icl_sequences: sequences for the ICL score (64, as ``induction scan``).
        icl_seed: seed of the ICL score's sequences (0, as ``induction scan --seed 0``).
        held_out_sequences: sequences in the held-out batch (64).
        held_out_seed: seed of the held-out batch; None means the run's training seed +
            `HELD_OUT_SEED_OFFSET` (just the offset for models with no recorded seed).
        phase_threshold: the best prefix-matching score must reach this for a phase change to be
            reported; None means the detector's prefix_threshold.
        min_icl_range: the ICL score joins the phase-change signal only if it moves by at least this
            many nats over the run (0.05).
    """

    detector: ScoreConfig = field(default_factory=ScoreConfig)
    icl: bool = True
    text: str | None = None
    icl_sequences: int = 64
    icl_seed: int = 0
    held_out_sequences: int = 64
    held_out_seed: int | None = None
    phase_threshold: float | None = None
    min_icl_range: float = 0.05

    def __post_init__(self) -> None:
        if self.icl_sequences < 1:
            raise ValueError(f"icl_sequences must be >= 1, got {self.icl_sequences}")
        if self.held_out_sequences < 1:
            raise ValueError(f"held_out_sequences must be >= 1, got {self.held_out_sequences}")
        if self.phase_threshold is not None and not 0.0 <= self.phase_threshold <= 1.0:
            raise ValueError(f"phase_threshold must be in [0, 1] or None, got {self.phase_threshold}")
        if not self.min_icl_range >= 0:
            raise ValueError(f"min_icl_range must be >= 0, got {self.min_icl_range}")

    @property
    def resolved_phase_threshold(self) -> float:
        return self.detector.prefix_threshold if self.phase_threshold is None else self.phase_threshold

    def scoring_settings(self, token_freqs: Tensor | None = None) -> dict[str, Any]:
        """What a checkpoint's scores depend on (the phase-change settings do not)."""
        icl = None
        if self.icl:
            text = None if self.text is None else {"path": str(self.text), "sha256": _file_sha256(Path(self.text))}
            icl = {"n_sequences": self.icl_sequences, "seed": self.icl_seed, "n_bootstrap": self.detector.n_bootstrap,
                   "text": text}
        freqs = None
        if token_freqs is not None:
            freqs = hashlib.sha256(token_freqs.detach().double().cpu().numpy().tobytes()).hexdigest()
        return {
            "format": TRACK_FORMAT_VERSION, "code_sha256": scoring_code_hash(),
            "detector": self.detector.to_dict(), "token_freqs_sha256": freqs,
            "icl": icl,
            "held_out": {"n_sequences": self.held_out_sequences, "seed": self.held_out_seed,
                         "seed_offset": HELD_OUT_SEED_OFFSET},
        }

    def cache_key(self, token_freqs: Tensor | None = None) -> str:
        blob = json.dumps(self.scoring_settings(token_freqs), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["detector"] = self.detector.to_dict()
        return out


def scoring_code_hash() -> str:
    """A hash of the source of the modules that compute a checkpoint's numbers, so that a changed
    definition (a new copying score, say) invalidates cached results instead of mixing with them."""
    import induction.data
    import induction.icl
    import induction.prompts
    import induction.scores

    digest = hashlib.sha256()
    for module in (induction.scores, induction.icl, induction.prompts, induction.data, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class CheckpointScores:
    """One checkpoint's scores (an entry of the track report's "checkpoints")."""

    step: int
    tokens_seen: int | None
    loss: float | None
    held_out_loss: float
    icl_score: float | None
    heads: list[dict[str, Any]]
    icl: dict[str, Any] | None = None
    revision: str | None = None

    def best_head(self) -> dict[str, Any]:
        """The head with the highest prefix-matching score."""
        return max(self.heads, key=lambda h: h["prefix_matching"])

    @property
    def best_prefix_matching(self) -> float:
        return float(self.best_head()["prefix_matching"])

    @property
    def induction_heads(self) -> list[tuple[int, int]]:
        return [(h["layer"], h["head"]) for h in self.heads if h["is_induction"]]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.revision is None:
            out.pop("revision")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointScores":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass
class PhaseChange:
    """The phase change: its steepest point and the steps where it is 10% and 90% complete."""

    step: int
    start_step: int
    end_step: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrackReport:
    """`induction track`: scores over every checkpoint of a run, and the phase change.

    JSON (CONTRACT): ``{"run", "checkpoints": [{"step", "tokens_seen", "loss", "held_out_loss",
    "icl_score", "heads": [HEAD...]}], "phase_change": {"step", "start_step", "end_step"} | null,
    "provenance"}``.
    """

    run: str
    checkpoints: list[CheckpointScores]
    phase_change: PhaseChange | None
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Induction-head formation"
    columns = ("step", "tokens_seen", "loss", "held_out_loss", "icl_score", "best_head",
               "best_prefix_matching", "best_copying", "n_induction_heads")

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "phase_change": None if self.phase_change is None else self.phase_change.to_dict(),
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for c in self.checkpoints:
            best = c.best_head()
            out.append({
                "step": c.step, "tokens_seen": c.tokens_seen, "loss": c.loss, "held_out_loss": c.held_out_loss,
                "icl_score": c.icl_score, "best_head": f"L{best['layer']}H{best['head']}",
                "best_prefix_matching": best["prefix_matching"], "best_copying": best["copying"],
                "n_induction_heads": len(c.induction_heads),
            })
        return out

    def summary(self) -> list[str]:
        lines = [f"run: {self.run} ({len(self.checkpoints)} checkpoints)"]
        if not self.checkpoints:
            return lines
        pc = self.phase_change
        if pc is None:
            lines.append("phase change: none (the best prefix-matching score never reached the threshold)")
        else:
            lines.append(f"phase change: step {pc.step} (10%-90% complete between steps {pc.start_step} and {pc.end_step})")
        first, last = self.checkpoints[0], self.checkpoints[-1]
        if first.icl_score is not None and last.icl_score is not None:
            lines.append(f"ICL score: {first.icl_score:.3f} at step {first.step} -> {last.icl_score:.3f} at step {last.step}")
        heads = ", ".join(f"L{layer}H{head}" for layer, head in last.induction_heads) or "none"
        lines.append(f"induction heads at step {last.step}: {heads}")
        return lines

    def to_dataframe(self, per_head: bool = False):
        """One row per checkpoint (`rows()`), or with per_head=True one row per (checkpoint, head)."""
        import pandas as pd

        if not per_head:
            return pd.DataFrame(self.rows(), columns=list(self.columns))
        records = []
        for c in self.checkpoints:
            for h in c.heads:
                records.append({"step": c.step, "tokens_seen": c.tokens_seen, "icl_score": c.icl_score,
                                "held_out_loss": c.held_out_loss, **{k: v for k, v in h.items() if not k.endswith("_ci")}})
        return pd.DataFrame(records)

    def plot(self):
        from induction import plots  # figures read reports (see induction.plots)

        return plots.plot_formation(self)


# ---- scoring ------------------------------------------------------------------------------------

def score_checkpoint(
    model: TransformerBridge, cfg: TrackConfig, held_out_seed: int, token_freqs: Tensor | None = None
) -> dict[str, Any]:
    """Head scores, ICL score and held-out loss of one model (the cached part of a checkpoint).

    The held-out batch comes from the model's recorded training stream (`induction.tasks.sample_stream`
    of its data config: repeated segments, few-shot or mixture), else from the synthetic stream over
    its vocabulary (`induction.icl.default_stream_config`).
    """
    scores = score_heads(model, cfg.detector, token_freqs=token_freqs)
    icl = None
    if cfg.icl:
        icl = icl_score(model, n_sequences=cfg.icl_sequences, seed=cfg.icl_seed, text=cfg.text,
                        n_bootstrap=cfg.detector.n_bootstrap)
    data = model_info(model).data
    stream = data_config_from_dict(data) if data else default_stream_config(model)
    tokens = sample_stream(stream, cfg.held_out_sequences, torch.Generator().manual_seed(held_out_seed))
    held_out = per_token_loss(model, tokens)[:, 1:].mean()
    return {"heads": scores.to_records(), "icl_score": None if icl is None else icl.score,
            "icl": None if icl is None else icl.to_dict(), "held_out_loss": float(held_out)}


def track(
    run_dir: str | os.PathLike[str],
    cfg: TrackConfig | None = None,
    progress: bool = True,
    cache: bool = True,
    provenance_fn: Callable[[dict[str, Any], float], dict[str, Any]] | None = None,
    token_freqs: Tensor | None = None,
) -> TrackReport:
    """Score every checkpoint of a training run and find its phase change (module docstring).

    Args:
        run_dir: a run directory written by `induction.train.train`.
        cfg: scoring settings; defaults to `TrackConfig()`.
        progress: a progress bar over checkpoints (stderr).
        cache: read and write ``<run>/track/<key>/``; False recomputes and writes nothing.
        provenance_fn: (settings, runtime_s) -> the report's provenance (the CLI passes
            `induction.report.provenance`); default: the settings and runtime only.
        token_freqs: optional [d_vocab] token frequencies for the detector's exclude_top/bottom.
    """
    cfg = cfg or TrackConfig()
    start = time.perf_counter()
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    entries = {int(e["step"]): e for e in manifest["checkpoints"]}
    train_seed = (manifest.get("train_config") or {}).get("seed")
    held_out_seed = _held_out_seed(cfg, train_seed)
    key = cfg.cache_key(token_freqs)
    cache_dir = run_dir / TRACK_DIR / key
    if cache:
        write_json_atomic(cache_dir / "settings.json", cfg.scoring_settings(token_freqs))
    results = []
    checkpoints = run_checkpoints(run_dir)
    for step, ckpt_dir in tqdm(checkpoints, desc="tracking", unit="ckpt", disable=not progress):
        entry = entries.get(step, {})
        identity = {"weights_sha256": _file_sha256(ckpt_dir / WEIGHTS_FILE), "held_out_seed": held_out_seed}
        path = cache_dir / f"step_{step:06d}.json"
        scored = _read_cache(path, identity) if cache else None
        if scored is None:
            model = load_model(run_dir, checkpoint=step)
            scored = score_checkpoint(model, cfg, held_out_seed, token_freqs)
            if cache:
                write_json_atomic(path, {"identity": identity, "result": scored})
        results.append(CheckpointScores(
            step=step, tokens_seen=entry.get("tokens_seen"), loss=entry.get("loss"), **scored,
        ))
    phase = phase_change_of(results, cfg)
    settings = {"track": cfg.to_dict(), "held_out_seed": held_out_seed, "cache_key": key,
                "data": manifest.get("data"), "train_config": manifest.get("train_config")}
    runtime = time.perf_counter() - start
    prov = provenance_fn(settings, runtime) if provenance_fn else {"settings": settings, "runtime_s": round(runtime, 3)}
    return TrackReport(run=str(run_dir), checkpoints=results, phase_change=phase, provenance=prov)


def track_revisions(
    spec: str,
    revisions: Sequence[str],
    cfg: TrackConfig | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    provenance_fn: Callable[[dict[str, Any], float], dict[str, Any]] | None = None,
    token_freqs: Tensor | None = None,
) -> TrackReport:
    """Score a Hugging Face model at each of its published training checkpoints, in the given order.

    Each revision is loaded in turn with `induction.models.load_model(spec, revision=...)` (and freed
    before the next). Its step is the number the revision name ends with (``step1000`` -> 1000,
    ``checkpoint-400`` -> 400), else its position in `revisions`. tokens_seen and loss are unknown
    (None). With `cache_dir`, results are cached there as for `track`, keyed by spec and revision.
    """
    cfg = cfg or TrackConfig()
    if not revisions:
        raise ValueError("give at least one revision")
    if len(set(revisions)) != len(revisions):
        raise ValueError(f"revisions repeated in {list(revisions)}")
    start = time.perf_counter()
    held_out_seed = _held_out_seed(cfg, None)
    cache_root = Path(cache_dir) / cfg.cache_key(token_freqs) if cache_dir is not None else None
    if cache_root is not None:
        write_json_atomic(cache_root / "settings.json", cfg.scoring_settings(token_freqs))
    steps = revision_steps(revisions)
    results = []
    for revision, step in tqdm(list(zip(revisions, steps)), desc="tracking", unit="rev", disable=not progress):
        identity = {"spec": spec, "revision": revision, "held_out_seed": held_out_seed}
        path = None if cache_root is None else cache_root / f"{_safe_name(spec)}--{_safe_name(revision)}.json"
        scored = _read_cache(path, identity) if path is not None else None
        if scored is None:
            model = load_model(spec, revision=revision)
            scored = score_checkpoint(model, cfg, held_out_seed, token_freqs)
            del model
            if path is not None:
                write_json_atomic(path, {"identity": identity, "result": scored})
        results.append(CheckpointScores(step=step, tokens_seen=None, loss=None, revision=revision, **scored))
    order = sorted(range(len(results)), key=lambda i: results[i].step)
    phase = phase_change_of([results[i] for i in order], cfg)
    settings = {"track": cfg.to_dict(), "held_out_seed": held_out_seed, "revisions": list(revisions)}
    runtime = time.perf_counter() - start
    prov = provenance_fn(settings, runtime) if provenance_fn else {"settings": settings, "runtime_s": round(runtime, 3)}
    return TrackReport(run=spec, checkpoints=results, phase_change=phase, provenance=prov)


def revision_steps(revisions: Sequence[str]) -> list[int]:
    """The training step each revision names (its trailing number), else its position in the list."""
    out = []
    for i, revision in enumerate(revisions):
        match = re.search(r"(\d+)$", revision)
        out.append(int(match.group(1)) if match else i)
    return out


def _held_out_seed(cfg: TrackConfig, train_seed: int | None) -> int:
    if cfg.held_out_seed is not None:
        return cfg.held_out_seed
    return int(train_seed or 0) + HELD_OUT_SEED_OFFSET


def _read_cache(path: Path | None, identity: dict[str, Any]) -> dict[str, Any] | None:
    """A cached result for this identity, or None (missing, unreadable or stale: recompute)."""
    if path is None or not path.exists():
        return None
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("identity") != identity or not isinstance(cached.get("result"), dict):
        return None
    return cached["result"]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


# ---- phase change -------------------------------------------------------------------------------

def phase_change_of(checkpoints: Sequence[CheckpointScores], cfg: TrackConfig) -> PhaseChange | None:
    """`detect_phase_change` on a run's checkpoints (sorted by step)."""
    if not checkpoints:
        return None
    return detect_phase_change(
        [c.step for c in checkpoints], [c.best_prefix_matching for c in checkpoints],
        None if any(c.icl_score is None for c in checkpoints) else [c.icl_score for c in checkpoints],
        threshold=cfg.resolved_phase_threshold, min_icl_range=cfg.min_icl_range,
    )


def detect_phase_change(
    steps: Curve,
    best_prefix_matching: Curve,
    icl_scores: Curve | None = None,
    threshold: float = 0.4,
    min_icl_range: float = 0.05,
) -> PhaseChange | None:
    """The phase change of a training run's curves, or None (algorithm: module docstring).

    Args:
        steps: training steps of the checkpoints (any order; steps < 1 are left out: log axis).
        best_prefix_matching: max over heads of the prefix-matching score, per checkpoint.
        icl_scores: the ICL score per checkpoint (it falls as in-context learning appears), or None.
        threshold: the best prefix-matching score must reach this, else None.
        min_icl_range: the ICL score counts only if it moves by at least this (nats).
    """
    s = np.asarray(steps, dtype=float)
    p = np.asarray(best_prefix_matching, dtype=float)
    c = np.asarray(icl_scores, dtype=float) if icl_scores is not None else np.full_like(s, np.nan)
    if not (s.shape == p.shape == c.shape):
        raise ValueError("steps, best_prefix_matching and icl_scores must have the same length")
    keep = (s >= 1) & np.isfinite(p)
    s, p, c = s[keep], p[keep], c[keep]
    order = np.argsort(s)
    s, p, c = s[order], p[order], c[order]
    if len(s) < 3 or p.max() < threshold or p.max() - p.min() <= 0:
        return None
    parts = [(p - p.min()) / (p.max() - p.min())]
    if np.isfinite(c).all() and c.max() - c.min() >= max(min_icl_range, 1e-12):
        parts.append((c.max() - c) / (c.max() - c.min()))
    g = np.mean(parts, axis=0)
    x = np.log(s)
    fit = _fit_logistic(x, g)
    if fit is None:
        return None
    x0, w = fit
    half = w * math.log(9.0)  # sigmoid(+-ln 9) = 0.9 / 0.1
    lo, hi = x[0], x[-1]
    to_step = lambda v: int(round(math.exp(min(max(v, lo), hi))))  # noqa: E731
    return PhaseChange(step=to_step(x0), start_step=to_step(x0 - half), end_step=to_step(x0 + half))


def _fit_logistic(x: np.ndarray, g: np.ndarray) -> tuple[float, float] | None:
    """(x0, w) of the least-squares fit g ~ a + b sigmoid((x - x0) / w) with b > 0, or None.

    Grid search, then a finer grid around the best point. Among near-equal fits (a jump between two
    checkpoints fits any x0 between them) take the widest w, and the mean x0 at that w.
    """
    span = float(x[-1] - x[0])
    if span <= 0:
        return None
    x0s = np.linspace(x[0], x[-1], 241)
    ws = np.geomspace(span * 1e-4, span, 81)
    best = _grid(x, g, x0s, ws)
    if best is None:
        return None
    x0, w = best
    dx = x0s[1] - x0s[0]
    refined = _grid(x, g, np.linspace(x0 - 2 * dx, x0 + 2 * dx, 81), np.geomspace(w / 1.6, w * 1.6, 41))
    return refined if refined is not None else best


def _grid(x: np.ndarray, g: np.ndarray, x0s: np.ndarray, ws: np.ndarray) -> tuple[float, float] | None:
    n = len(x)
    z = (x[None, None, :] - x0s[:, None, None]) / ws[None, :, None]
    sig = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))  # [x0, w, checkpoint]
    sc = sig - sig.mean(-1, keepdims=True)
    gc = g - g.mean()
    var_s = (sc**2).sum(-1)
    cov = (sc * gc).sum(-1)
    sst = float((gc**2).sum())
    valid = (var_s > 1e-12) & (cov > 0)
    if not valid.any() or sst <= 0:
        return None
    sse = np.where(valid, sst - cov**2 / np.where(valid, var_s, 1.0), np.inf)
    tol = sse.min() + 1e-6 * sst + 1e-12 * n
    near = sse <= tol
    wi = int(np.nonzero(near.any(0))[0].max())  # the widest near-optimal w
    x0 = float(x0s[near[:, wi]].mean())
    return x0, float(ws[wi])
