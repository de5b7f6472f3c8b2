"""Path-patching effects on a metric: which sender -> receiver q/k/v paths carry it (`circuits.paths`).

Direction: noising. The run that is patched is the clean one (the model's stream with its repeats,
or the few-shot prompts with their labels) and each path carries the sender's output from the
corrupted run (fresh random tokens, or replaced labels): `circuits.patch_paths(model,
corrupted, clean, ...)`. The other direction cannot show the induction circuit one path at a time:
on a stream without repeats, giving the induction head the clean previous-token keys alone
restores nothing, because its query and values still read the corrupted tokens. An effect is
the metric with the path noised minus the clean run's metric (for the ICL score, positive: the
path carries in-context learning).

- `path_effects`: the paths into chosen receivers on a `MetricSetup` (`induction patch --paths`).
- `repeat_loss_path_effects`: the paths into chosen receivers on the repeat loss of given sequences,
  with a bootstrap interval over sequences per path and per input (`induction track --paths`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from circuits.paths import INPUTS, HeadPath, all_paths, patch_paths
from induction.common.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci, percentile_interval
from induction.loading.devices import model_device
from induction.loading.models import model_info
from induction.measures.formation import PhaseChange
from induction.measures.metrics import MetricSetup, PerPrompt, corrupt, repeat_loss_per_prompt


def head_label(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def earlier_heads(model: TransformerBridge, receivers: Sequence[Head]) -> list[Head]:
    """Every head in a layer below the highest receiver (the senders a path into them can have)."""
    top = max((layer for layer, _ in receivers), default=0)
    return [(layer, h) for layer in range(top) for h in range(int(model.cfg.n_heads))]


@dataclass
class PathEffects:
    """Per-prompt metric values with each path noised, and the clean run's.

    Attributes:
        paths: the `circuits.HeadPath`s, in the order of `values`.
        values: `[path, batch]` the per-prompt metric with that path noised.
        clean: `[batch]` the per-prompt metric of the clean run.
        corrupted: the corrupted run's metric (for scale), or None.
    """

    paths: list[HeadPath]
    values: Tensor
    clean: Tensor
    corrupted: float | None = None

    @property
    def effects(self) -> Tensor:
        """`[path]` mean metric with the path noised minus the clean run's."""
        return (self.values.double() - self.clean.double()).mean(-1).float()

    def ci(self, i: int, n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
        """Percentile bootstrap interval over prompts of path `i`'s effect (paired per prompt)."""
        return bootstrap_mean_ci((self.values[i].double() - self.clean.double()).numpy(), n_bootstrap, seed=seed)

    def records(self, n_bootstrap: int = 0, seed: int = 0) -> list[dict[str, Any]]:
        """`{"sender", "receiver", "input", "effect"}` per path (`[layer, head]` heads), with ``ci``
        when `n_bootstrap` > 0."""
        out = []
        for i, (p, e) in enumerate(zip(self.paths, self.effects.tolist())):
            rec: dict[str, Any] = {"sender": list(p.sender), "receiver": list(p.receiver), "input": p.input,
                                   "effect": float(e)}
            if n_bootstrap > 0:
                ci = self.ci(i, n_bootstrap, seed)
                rec["ci"] = None if ci is None else list(ci)
            out.append(rec)
        return out


def _per_prompt(fn: PerPrompt) -> PerPrompt:
    """`fn` as a per-prompt metric of one quantity (`[batch]`)."""
    def metric(logits: Tensor) -> Tensor:
        value = fn(logits)
        return value[:, 0] if value.ndim == 2 else value
    return metric


def path_effects(
    model: TransformerBridge,
    setup: MetricSetup,
    senders: Sequence[Head] | None = None,
    receivers: Sequence[Head] | None = None,
    inputs: Sequence[str] = INPUTS,
    progress: bool = False,
) -> PathEffects:
    """Each path from `senders` (default: every head below a receiver) into `receivers` (default:
    every head of layer >= 1) through `inputs`, noised on `setup`'s clean run (module docstring)."""
    receivers = [(l, h) for l in range(1, int(model.cfg.n_layers)) for h in range(int(model.cfg.n_heads))] \
        if receivers is None else [tuple(r) for r in receivers]
    senders = earlier_heads(model, receivers) if senders is None else [tuple(s) for s in senders]
    paths = all_paths(model, senders, receivers, inputs)
    if not paths:
        raise ValueError("senders and receivers give no path: every receiver must sit in a later layer than a sender")
    device = model_device(model)
    clean, corrupted = setup.tokens.to(device), setup.corrupted.to(device)
    metric = _per_prompt(setup.per_prompt)
    result = patch_paths(model, corrupted, clean, metric, paths, per_prompt=True, progress=progress)
    with torch.no_grad():
        corrupted_value = float(metric(model(corrupted)).float().mean())
    return PathEffects(paths=paths, values=result.values, clean=result.baseline, corrupted=corrupted_value)


def repeat_loss_path_effects(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    receivers: Sequence[Head],
    senders: Sequence[Head] | None = None,
    seed: int = 0,
) -> PathEffects:
    """The paths into `receivers` on the repeat loss of `tokens` (`induction track --paths`).

    The metric is each sequence's mean loss over its tokens that occurred earlier in it
    (`induction.measures.metrics.repeat_loss_per_prompt`): what only induction can predict. The ICL
    score, a difference of two single-token losses, is a poor per-path metric on a stream of repeated
    segments: where its early token already sits in a repeat, noising a key path raises the early
    loss as much as the late one (on the default model, 3 of 32 sequences moved it by -5 nats and
    flipped the sign of the mean). The corrupted run draws fresh random tokens at every content
    position (`induction.measures.metrics.corrupt`, seeded with `seed` + 1).
    """
    tokens = tokens.to(model_device(model))
    bos = model_info(model).bos_token_id is not None
    corrupted = corrupt(tokens, int(model.cfg.d_vocab), bos, torch.Generator(device="cpu").manual_seed(seed + 1))
    per_prompt = repeat_loss_per_prompt(tokens, int(bos))
    setup = MetricSetup("repeat-loss", tokens, corrupted, lambda logits: per_prompt(logits).mean(), per_prompt,
                        "the ICL score's sequences")
    return path_effects(model, setup, senders, receivers)


def input_totals(effects: PathEffects, n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Per input (q, k, v): the summed effect of its paths, with a bootstrap interval over prompts of
    that sum (each prompt's summed difference, resampled), and those per-prompt sums (`per_prompt`,
    for the interval of the formation step, `key_path_formation`)."""
    out = {}
    diff = effects.values.double() - effects.clean.double()  # [path, batch]
    for which in INPUTS:
        rows = [i for i, p in enumerate(effects.paths) if p.input == which]
        per_prompt = diff[rows].sum(0).numpy() if rows else np.zeros(diff.shape[1])
        ci = bootstrap_mean_ci(per_prompt, n_bootstrap, seed=seed)
        out[which] = {"effect": float(per_prompt.mean()), "ci": None if ci is None else list(ci), "n_paths": len(rows),
                      "per_prompt": [float(x) for x in per_prompt]}
    return out


def formation_step(steps: Sequence[int], effects: Sequence[float], fraction: float = 0.5) -> int | None:
    """The first step at which `effects` reaches `fraction` of its final value and stays at or above
    it (None when the final value is not positive)."""
    values = np.asarray(effects, dtype=float)
    if not len(values) or not np.isfinite(values[-1]) or values[-1] <= 0:
        return None
    above = values >= fraction * values[-1]
    for i in range(len(values)):
        if above[i:].all():
            return int(steps[i])
    return None


def formation_steps(steps: Sequence[int], effects: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """`formation_step` of every column of `effects` (`[checkpoint, sample]`) at once; NaN where none."""
    effects = np.asarray(effects, dtype=float)
    final = effects[-1]
    above = effects >= fraction * final
    stays = np.flip(np.logical_and.accumulate(np.flip(above, 0), axis=0), 0)  # above from here to the end
    first = np.argmax(stays, axis=0)
    out = np.asarray(steps, dtype=float)[first]
    out[~(np.isfinite(final) & (final > 0) & stays.any(0))] = np.nan
    return out


def key_path_formation(steps: Sequence[int], path_inputs: Sequence[dict[str, Any]], phase: PhaseChange | None,
                       n_bootstrap: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """When the key paths form, with intervals (and the same for q and v).

    - `formed_step`: the first step from which their summed effect stays >= half its final value
      (`formation_step`); `formed_step_ci`: its 95% percentile interval over bootstrap resamples of
      the sequences (the same resampled sequences at every checkpoint, as every checkpoint is
      measured on the same sequences), and `formed_share`: the share of resamples in which it forms;
    - `significant_step`: the first step from which the effect's own 95% interval stays above 0;
    - `relative_to_phase_change`: `formed_step` before, during or after the 10%-90% window.
    """
    out: dict[str, Any] = {}
    for which in "qkv":
        effects = [b[which]["effect"] for b in path_inputs]
        lows = [b[which]["ci"][0] if b[which].get("ci") else float("nan") for b in path_inputs]
        formed = formation_step(steps, effects, 0.5)
        significant = next((int(steps[i]) for i in range(len(lows))
                            if all(math.isfinite(lo) and lo > 0 for lo in lows[i:])), None)
        out[which] = {"formed_step": formed, "formed_step_ci": None, "formed_share": None,
                      "significant_step": significant, "final_effect": effects[-1] if effects else None,
                      "final_ci": path_inputs[-1][which].get("ci") if path_inputs else None,
                      "relative_to_phase_change": _relative(formed, phase)}
        per_prompt = [b[which].get("per_prompt") for b in path_inputs]
        if n_bootstrap > 0 and per_prompt and all(per_prompt) and len({len(p) for p in per_prompt}) == 1 \
                and len(per_prompt[0]) >= 2:
            values = np.asarray(per_prompt, dtype=float)  # [checkpoint, sequence]
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, values.shape[1], size=(n_bootstrap, values.shape[1]))
            resampled = values[:, idx].mean(-1)  # [checkpoint, resample]
            steps_b = formation_steps(steps, resampled)
            formed_b = steps_b[np.isfinite(steps_b)]
            out[which]["formed_share"] = float(len(formed_b) / n_bootstrap)
            if len(formed_b):
                lo, hi = percentile_interval(formed_b)
                out[which]["formed_step_ci"] = [float(lo), float(hi)]
    return out


def _relative(step: int | None, phase: PhaseChange | None) -> str | None:
    if step is None or phase is None:
        return None
    if step < phase.start_step:
        return "before"
    return "during" if step <= phase.end_step else "after"
