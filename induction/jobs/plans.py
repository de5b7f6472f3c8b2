"""Each job's memory plan: its settings mapped onto the phases of the one memory rule
(`induction.loading.memory`), checked before the model is loaded.

A job calls `check_plan` with the model it was given: for a MODEL spec or `ModelRef` the plan comes
from its ``config.json`` (no weights loaded) and a job that cannot fit is refused before loading, in
one line naming the config field to lower; for a loaded model the plan uses its measured parameter
bytes. The phases (what each job runs, at its peak):

- scan: the detector's forward over `detector.batch_size` prompts (logits at one position; each
  layer's pattern reduced in float32), the ICL score's forwards (logits at two positions);
- track, per checkpoint: scan's phases, the held-out loss's forwards (every position's logits), with
  `ablate` one forward over all the ICL sequences, and the audit's reference weights on the host;
- ablate, patch (exact): a forward over the sequences, twice stacked (the engine stacks more runs
  where memory allows: `circuits.engine.default_runs_per_forward`), and for patching the clean
  run's `hook_z` of every layer; patch (attribution): `attribution_phase`, layer by layer when the
  whole graph would not fit;
- fewshot: `batch_size` prompts of the longest length per forward.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from induction.common import checks
from induction.loading.devices import check_device_name, model_device, model_dtype, resolve_device, resolve_dtype
from induction.loading.memory import (
    MemoryPlan,
    ModelShape,
    Phase,
    attribution_phase,
    forward_phase,
    make_plan,
    sequences_per_budget,
    shape_for,
)
from induction.measures.icl import icl_positions
from induction.measures.losses import FORWARD_BUDGET_BYTES

HOST_BYTES_PER_TOKEN = 8  # an int64 token id
ICL_HOST_BYTES_PER_TOKEN = 12  # its token and its float32 loss
PROMPT_OBJECT_BYTES = 1024  # a few-shot prompt's episode as Python objects


def scan_phases(shape: ModelShape, cfg: Any, dtype: Any = None) -> list[Phase]:
    """`induction scan`'s phases for a `ScanConfig` (module docstring). Each phase names the config
    field that sizes it by its own name (``n_prompts``, ``batch_size``, ``n_sequences``), as the CLI's
    flag tables do."""
    d = cfg.detector
    prompts, seq = d.prompts.n_prompts, d.prompts.seq_len or min(shape.n_ctx, 256)
    batch = min(prompts, d.batch_size)
    pattern = batch * shape.n_heads * seq * seq * 4  # one layer's pattern in float32, reduced in its hook
    scores = 4 * 5 * shape.n_layers * shape.n_heads  # five per-prompt scores per head
    phases = [forward_phase(shape, "the detector's forward", "batch_size", batch, batch, seq, dtype,
                            logit_positions=1, kept_bytes=pattern,
                            host_bytes=prompts * (HOST_BYTES_PER_TOKEN * seq + scores),
                            host_setting="n_prompts", host_value=prompts)]
    if cfg.icl is not None:
        n, icl_seq = cfg.icl.n_sequences, cfg.icl.seq_len or min(shape.n_ctx, 512)
        late = icl_positions(icl_seq)[1]
        b = min(n, cfg.icl.batch_size or sequences_per_budget(shape, late, 2, FORWARD_BUDGET_BYTES, dtype))
        phases.append(forward_phase(shape, "the ICL score's forwards", "n_sequences", b, b, late, dtype,
                                    logit_positions=2, host_bytes=n * ICL_HOST_BYTES_PER_TOKEN * icl_seq,
                                    host_setting="n_sequences", host_value=n))
    return phases


def track_phases(shape: ModelShape, cfg: Any, dtype: Any = None, held_out_len: int | None = None,
                 held_out_count: int | None = None) -> list[Phase]:
    """`induction track`'s phases per checkpoint for a `TrackConfig`; the held-out batch's sequence
    length and count (unknown before loading: the context length and `held_out_sequences` or 8192 tokens)."""
    seq = held_out_len or shape.n_ctx
    n = held_out_count or cfg.held_out_sequences or max(1, 8192 // seq)
    batch = min(n, sequences_per_budget(shape, seq, seq, FORWARD_BUDGET_BYTES, dtype))
    phases = scan_phases(shape, cfg.scan, dtype)
    phases.append(forward_phase(shape, "the held-out loss's forwards", "held_out_sequences", n, batch, seq, dtype,
                                host_bytes=n * ICL_HOST_BYTES_PER_TOKEN * seq, host_setting="held_out_sequences",
                                host_value=n))
    if cfg.ablate is not None and cfg.scan.icl is not None:
        icl = cfg.scan.icl
        late = icl_positions(icl.seq_len or min(shape.n_ctx, 512))[1]
        phases.append(forward_phase(shape, f"the ablated runs (ablate = {cfg.ablate}: one forward over all the ICL sequences)",
                                    "n_sequences", icl.n_sequences, icl.n_sequences, late, dtype))
    return phases


def effects_phases(shape: ModelShape, metric: Any, method: str, dtype: Any = None,
                   budget: int | None = None) -> list[Phase]:
    """`induction ablate` (method ``ablate``) and `induction patch` (``exact``, ``attribution``) phases
    for a `MetricSpec`; `budget`: the bytes left for activations (attribution's layers per backward)."""
    n, seq = metric.sequences, metric.seq_len or min(shape.n_ctx, 512)
    host = dict(host_bytes=n * HOST_BYTES_PER_TOKEN * seq, host_setting="sequences", host_value=n)
    if method == "attribution":
        return [attribution_phase(shape, "sequences", n, n, seq, dtype, budget, host["host_bytes"])]
    size = resolve_dtype(dtype).itemsize
    z = shape.n_layers * n * seq * shape.n_heads * shape.d_head * size if method == "exact" else 0
    return [forward_phase(shape, "the intervened runs (two stacked)", "sequences", n, 2 * n, seq, dtype,
                          kept_bytes=z, **host)]


def fewshot_phases(shape: ModelShape, cfg: Any, dtype: Any = None) -> list[Phase]:
    """`induction fewshot`'s evaluation forwards for a `FewShotConfig`."""
    longest = min(shape.n_ctx, 4 * max(cfg.shots) + 2)
    batch = min(cfg.n_prompts, cfg.batch_size)
    return [forward_phase(shape, "the few-shot forwards", "batch_size", batch, batch, longest, dtype,
                          host_bytes=cfg.n_prompts * (PROMPT_OBJECT_BYTES + HOST_BYTES_PER_TOKEN * longest),
                          host_setting="n_prompts", host_value=cfg.n_prompts)]


PhasesOf = Callable[[ModelShape, Any, "int | None"], list[Phase]]
"""(shape, dtype, bytes left for activations) -> the job's phases."""


def memory_plan(job: str, model: Any, phases_of: PhasesOf, device: Any = None, dtype: Any = None,
                available: int | None = None, extra_parameter_copies: int = 0) -> MemoryPlan | None:
    """The plan of `job` on `model` (a loaded bridge: its device, dtype and parameter bytes; a spec or
    `ModelRef`: its config.json, on `device` (the ref's, else auto) in `dtype`); None when no config is
    found before loading. `available`: the device's memory for the plan, parameters included (None:
    `device_budget`)."""
    shape, parameter_bytes = shape_for(model)
    if shape is None:
        return None
    if parameter_bytes is not None:
        device, dtype = model_device(model), model_dtype(model)
    else:
        named = getattr(model, "device", None) or device
        if available is None:
            device = resolve_device(named)  # this machine's
        else:  # planning for a device this machine need not have
            device = torch.device("cuda" if check_device_name(named) == "auto" else check_device_name(named))
        dtype = getattr(model, "dtype", None) or dtype
    plan = make_plan(job, shape, [], device, dtype, parameter_bytes, extra_parameter_copies)
    free = device_budget(plan, parameter_bytes is not None) if available is None else available
    plan.phases = phases_of(shape, dtype, free - plan.parameter_bytes)
    return plan


def device_budget(plan: MemoryPlan, loaded: bool) -> int:
    """The device memory a plan may use: what is free now, plus the parameters when the model is
    already loaded (they are resident: the free memory no longer counts them)."""
    return checks.available_memory(plan.device) + (plan.parameter_bytes if loaded else 0)


def check_plan(job: str, model: Any, phases_of: PhasesOf, device: Any = None, dtype: Any = None,
               extra_parameter_copies: int = 0) -> MemoryPlan | None:
    """`memory_plan`, refused in one line (`MemoryPlan.check`) when it does not fit."""
    plan = memory_plan(job, model, phases_of, device, dtype, extra_parameter_copies=extra_parameter_copies)
    if plan is not None:
        plan.check(device_budget(plan, isinstance(model, torch.nn.Module)))
    return plan

