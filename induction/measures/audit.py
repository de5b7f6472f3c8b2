"""The checkpoint audit of `induction track`: checkpoints that are not the step they are named for.

Published suites serve some revisions with the wrong weights (EleutherAI pythia #205: 86 of 154
pythia-2.8b branches serve final-era weights; #206: two pythia-12b branches serve the final model's
first shard; #195: pythia-2.8b steps 0-6300 identical; #83: step0 equals step1; OLMo #915), and a
formation tracker that trusts the names draws a phase change that did not happen. Before the phase
change is fitted, every checkpoint is checked for

- ``identical_to_final``: the same weights as the final (highest-step) checkpoint;
- ``identical_weights``: the same weights as an earlier checkpoint (``same_as``: the earliest one);
- ``distance_backwards``: its relative distance from the first checkpoint,
  ``d_t = ||theta_t - theta_0|| / ||theta_0||`` over all parameters, is smaller than an earlier
  checkpoint's by more than `tolerance` (relative: ``d_t < (1 - tolerance) * max_{s < t} d_s``,
  the maximum over checkpoints not already suspect): a later step serving earlier weights.

Weights are compared by hash: the checkpoint's weights-file hash where the track cache has one
(`CheckpointSource.identity["weights_sha256"]`), else a hash of its parameters' bytes computed
where it is scored (`checkpoint_audit_data`). The distance is computed there too, in one pass over
the parameters against the first checkpoint's (held on the CPU, loaded once per process), and
cached with the checkpoint's result. Suspect checkpoints are left out of the phase-change fit
unless kept (`TrackConfig.keep_suspect`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

REASONS = ("identical_to_final", "identical_weights", "distance_backwards")
DEFAULT_TOLERANCE = 0.05
_REFERENCE: dict[str, Any] = {}  # the first checkpoint's parameters on the CPU, by its ref (one at a time)


def parameters_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _reference_parameters(reference: Any, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The first checkpoint's parameters on the CPU: `model`'s when it is that checkpoint, else loaded
    (once per process: the tasks of one track share it)."""
    key = repr(reference)
    if model is not None and _REFERENCE.get("key") != key:
        _REFERENCE.clear()
        _REFERENCE.update(key=key, params={n: p.detach().cpu().clone() for n, p in model.named_parameters()})
    if _REFERENCE.get("key") != key:
        _REFERENCE.clear()
        model = replace(reference, device="cpu").load()
        _REFERENCE.update(key=key, params={n: p.detach() for n, p in model.named_parameters()})
    return _REFERENCE["params"]


def release_reference() -> None:
    """Drop the first checkpoint's parameters this process holds (once a track's scoring is done)."""
    _REFERENCE.clear()


def relative_distance(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> float:
    """``||theta - theta_ref|| / ||theta_ref||`` over the parameters both have, accumulated in float64."""
    num = den = 0.0
    for name, param in model.named_parameters():
        ref = reference.get(name)
        if ref is None or ref.shape != param.shape:
            continue
        p = param.detach().to(device="cpu", dtype=torch.float64)
        r = ref.to(torch.float64)
        num += float((p - r).pow(2).sum())
        den += float(r.pow(2).sum())
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def checkpoint_audit_data(model: torch.nn.Module, reference: Any, identity: dict[str, Any],
                          ref: Any = None) -> dict[str, Any]:
    """What the audit needs of one checkpoint: its weights hash and its distance from the first one.

    Args:
        model: the loaded checkpoint.
        reference: the first checkpoint: (how to load it (a `ModelRef`), its cache identity, which the
            result records); None: no distance.
        identity: the checkpoint's cache identity (its ``weights_sha256``, when it has one, is used).
        ref: how `model` was loaded: when it is `reference`, its parameters are the reference's.
    """
    weights = identity.get("weights_sha256") or parameters_sha256(model)
    if reference is None:
        return {"weights_sha256": weights, "distance": None, "reference": None}
    first, first_identity = reference
    same = ref is not None and (ref.spec, ref.checkpoint, ref.revision) == (first.spec, first.checkpoint, first.revision)
    distance = relative_distance(model, _reference_parameters(first, model if same else None))
    return {"weights_sha256": weights, "distance": distance, "reference": first_identity}


@dataclass
class CheckpointAudit:
    """The report's ``audit`` block: suspect checkpoints, every distance, and whether the fit left them out."""

    suspect: list[dict[str, Any]] = field(default_factory=list)
    distances: list[dict[str, Any]] = field(default_factory=list)
    excluded_from_fit: bool = True
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def suspect_steps(self) -> set[int]:
        return {s["step"] for s in self.suspect}

    def to_dict(self) -> dict[str, Any]:
        return {"suspect": self.suspect, "distances": self.distances, "excluded_from_fit": self.excluded_from_fit,
                "tolerance": self.tolerance}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointAudit":
        return cls(list(d.get("suspect") or []), list(d.get("distances") or []), bool(d.get("excluded_from_fit", True)),
                   float(d.get("tolerance", DEFAULT_TOLERANCE)))

    def summary(self) -> list[str]:
        if not self.suspect:
            return ["checkpoint audit: no suspect checkpoints"]
        fit = "left out of" if self.excluded_from_fit else "kept in (keep_suspect)"
        lines = [f"checkpoint audit: {len(self.suspect)} suspect checkpoint(s), {fit} the phase-change fit"]
        for s in self.suspect:
            label = s.get("revision") or s.get("name") or f"step {s['step']}"
            same = f" (same as {s['same_as']})" if s.get("same_as") is not None else ""
            lines.append(f"  suspect: {label} at step {s['step']}: {', '.join(s['reasons'])}{same}")
        return lines


def audit_checkpoints(checkpoints: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE,
                      keep_suspect: bool = False) -> CheckpointAudit:
    """Audit checkpoints (module docstring).

    Args:
        checkpoints: one dict per checkpoint, any order: ``step``, ``name``, ``revision`` (or None),
            ``weights_sha256`` and ``distance`` (None where unknown: not judged).
        tolerance: the relative drop of the distance from the first checkpoint that is suspect.
        keep_suspect: recorded as ``excluded_from_fit = not keep_suspect``.
    """
    ordered = sorted(checkpoints, key=lambda c: c["step"])
    reasons: dict[int, list[str]] = {c["step"]: [] for c in ordered}
    same_as: dict[int, Any] = {}
    final = ordered[-1] if ordered else None
    first_of: dict[str, dict[str, Any]] = {}
    for c in ordered:
        h = c.get("weights_sha256")
        if h is None or c is final:
            continue
        if final.get("weights_sha256") == h:
            reasons[c["step"]].append("identical_to_final")
            same_as[c["step"]] = final["step"]
        elif h in first_of:
            reasons[c["step"]].append("identical_weights")
            same_as[c["step"]] = first_of[h]["step"]
        else:
            first_of[h] = c
    running = None
    for c in ordered:
        d = c.get("distance")
        if d is None or not math.isfinite(d):
            continue
        if running is not None and d < (1 - tolerance) * running:
            reasons[c["step"]].append("distance_backwards")
        elif not reasons[c["step"]]:  # a suspect checkpoint does not raise the bar for the genuine ones after it
            running = d if running is None else max(running, d)
    suspect = []
    for c in ordered:
        if reasons[c["step"]]:
            entry = {"step": c["step"], "name": c.get("name"), "revision": c.get("revision"),
                     "reasons": reasons[c["step"]], "same_as": same_as.get(c["step"])}
            suspect.append(entry)
    distances = [{"step": c["step"], "distance": c.get("distance")} for c in ordered]
    return CheckpointAudit(suspect, distances, not keep_suspect, tolerance)


def fit_mask(steps: Sequence[int], audit: CheckpointAudit) -> list[bool]:
    """Which checkpoints (by step) the phase-change fit uses: all, or all but the suspect ones."""
    if not audit.excluded_from_fit:
        return [True] * len(steps)
    bad = audit.suspect_steps
    return [s not in bad for s in steps]


def audit_of(sources: Sequence[Any], results: Sequence[Any], tolerance: float = DEFAULT_TOLERANCE,
             keep_suspect: bool = False, refs: Sequence[Any] | None = None) -> CheckpointAudit:
    """`audit_checkpoints` of a track's checkpoints: its sources (`CheckpointSource`: step, name,
    revision) and their scored results (`CheckpointScores`, whose ``audit`` is `checkpoint_audit_data`).

    A cached distance measured from another first checkpoint (a Trainer run whose oldest checkpoints
    were deleted since) is measured again from this one, loading that checkpoint on the CPU (`refs`:
    how each loads), without rescoring it; without `refs` it is not judged.
    """
    if sources:
        first = min(range(len(sources)), key=lambda i: sources[i].step)
        reference = None if refs is None else refs[first]
        first_identity = sources[first].identity
        for i, result in enumerate(results):
            data = result.audit or {}
            if reference is not None and data.get("reference") != first_identity:
                model = replace(refs[i], device="cpu").load()
                result.audit = {**data, "distance": relative_distance(model, _reference_parameters(reference)),
                                "reference": first_identity}
            elif reference is None and data.get("reference") is not None:
                result.audit = {**data, "distance": None}
        release_reference()
    entries = [{"step": s.step, "name": s.name, "revision": s.revision, **(r.audit or {})}
               for s, r in zip(sources, results)]
    return audit_checkpoints(entries, tolerance, keep_suspect)
