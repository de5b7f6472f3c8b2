"""`track`: head scores, ICL score and held-out loss at every checkpoint of a run, and the phase change.

The run is an `induction train` run directory, a Hugging Face Trainer output directory
(``checkpoint-N/`` folders), a folder holding one model directory per revision, or (with
`revisions`) a Hugging Face model's published training checkpoints (`induction.loading.sources`); of
the local ones only JSON and safetensors files are read. Each checkpoint is scored with the same
settings as `induction scan` (`ScanConfig`), so a tracked checkpoint and a scanned one give the same
numbers, plus the held-out loss: the mean next-token loss on a fixed batch of the run's own data
stream (for models without one, the synthetic stream over their vocabulary), drawn with a seed
different from the training seed (training seed + `HELD_OUT_SEED_OFFSET`).

Results are cached per checkpoint (`induction.loading.cache`) in ``<run>/track/<settings-key>/`` (local
runs; a published model's revisions in `TrackConfig.cache_dir`); the key hashes every scoring
setting (the copying estimate's sources per prompt and seed included) and the source of the
scoring modules. Each checkpoint's copying score is estimated as `scan`'s (`induction.heads.scores`),
with its `copying_se` in every head record and the method in the provenance.

With `ablate` (``zero`` or ``mean``, `induction track --ablate`), each checkpoint's scoring also
ablates every head alone on the ICL score's own sequences (`induction.measures.effects.icl_head_effects`):
each head record gains ``ablation_effect`` = ICL score with the head ablated minus without. The
final checkpoint's induction heads are known only once every checkpoint is scored, so a second
pass (one task per checkpoint, through the same executor, cached in ``<cache>/induction_set/``
keyed by the head set) ablates them together at every checkpoint against layer-matched random sets
(`induction.measures.effects.icl_head_set_effect`); `finish_track` adds the summed single-head effects and
the share of the ICL score the set carries (`induction.measures.formation.induction_set_block`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from induction.common.provenance import provenance
from induction.jobs.executor import Executor, LocalExecutor
from induction.jobs.track.config import TrackConfig
from induction.jobs.track.paths import run_paths, with_paths
from induction.jobs.track.plan import InductionSetPlan, TrackPlan, plan_induction_set, plan_track
from induction.jobs.track.tasks import induction_set_task, score_task
from induction.measures.audit import audit_of, fit_mask, release_reference
from induction.measures.effects import HeadSetEffect
from induction.measures.formation import CheckpointScores, induction_set_block, phase_change_of
from induction.measures.transience import transience_of
from induction.reports.track import TrackReport


def finish_track(plan: TrackPlan, computed: list[dict[str, Any]], start: float,
                 execution: dict[str, Any] | None = None, induction_set: InductionSetPlan | None = None,
                 set_computed: list[dict[str, Any]] | None = None, paths_done: Any = None) -> TrackReport:
    """The TrackReport of a plan, given the results of its tasks (in task order), and with
    `cfg.ablate` those of its second pass (`plan_induction_set`)."""
    cfg = plan.cfg
    scored = plan.results(computed)
    ablation = None
    if cfg.ablate is not None:
        if induction_set is None:  # a caller that ran only the first pass: run the second here
            induction_set = plan_induction_set(plan, scored)
            set_computed = LocalExecutor().map(induction_set_task, induction_set.tasks)
        sets = induction_set.results(set_computed or [])
        scored = [{**result, "ablation": {**result["ablation"], "induction_set": induction_set_block(
                      result["heads"], HeadSetEffect.from_dict(sets[i]) if i in sets else None)}}
                  for i, result in enumerate(scored)]
        ablation = ablation_summary(cfg, induction_set.heads, [sets[i] for i in sorted(sets)])
    scored, paths = with_paths(plan, scored, paths_done)
    results = [CheckpointScores(step=s.step, tokens_seen=s.tokens_seen, loss=s.loss, revision=s.revision,
                                **scored[i]) for i, s in enumerate(plan.sources)]
    audit = audit_of(plan.sources, results, cfg.audit_tolerance, cfg.keep_suspect, plan.refs)
    fitted = [c for c, keep in zip(results, fit_mask([c.step for c in results], audit)) if keep]
    phase = phase_change_of(fitted, cfg.resolved_phase_threshold, cfg.min_icl_range)
    settings = {"track": cfg.to_dict(), "held_out_seed": plan.held_out_seed, "cache_key": plan.cache_key,
                "copying_estimate": cfg.scan.detector.copying_method(),
                "data": plan.manifest.get("data"), "train_config": plan.manifest.get("train_config"),
                "checkpoints_computed": len(computed), "checkpoints_cached": len(plan.cached),
                "pending_checkpoint": plan.pending}
    if induction_set is not None:
        settings.update(induction_set_computed=len(set_computed or []), induction_set_cached=len(induction_set.cached))
    prov = provenance(plan.run, None, cfg.scan.seed, settings, time.perf_counter() - start, **plan.placement)
    prov.update(execution or {"executor": "local", "workers": 1})
    icl = cfg.scan.icl
    transience = None if icl is None else transience_of(results, phase, n_bootstrap=icl.n_bootstrap, seed=icl.seed)
    return TrackReport(run=plan.run, checkpoints=results, phase_change=phase, provenance=prov, ablation=ablation,
                       transience=transience, paths=paths, audit=audit.to_dict())


def ablation_summary(cfg: TrackConfig, heads: list[tuple[int, int]], sets: list[dict[str, Any]]) -> dict[str, Any]:
    """The report-level ``ablation`` block: the method, the final induction heads, and the control."""
    control = next((s for s in sets if s.get("control_heads")), None)
    reason = next((s["control_unavailable"] for s in sets if s.get("control_unavailable")), None)
    if not heads:
        reason = "the final checkpoint has no induction heads: no set to ablate"
    return {"method": cfg.ablate, "induction_heads": [list(h) for h in heads], "n_draws": cfg.ablate_draws,
            "control_heads": None if control is None else control["control_heads"],
            "control_unavailable": reason}


def run_plans(plans: Sequence[TrackPlan], executor: Executor, start: float, progress: bool = False,
              desc: str = "tracking") -> list[TrackReport]:
    """Score the missing checkpoints of every plan in one `executor.map`, then (for plans with
    `ablate`) ablate each run's final induction heads at every checkpoint in a second one."""
    computed = executor.map(score_task, [t for plan in plans for t in plan.tasks], progress=progress, desc=desc,
                            unit="checkpoint")
    release_reference()  # the audit's copy of the first checkpoint (this process's; Ray workers drop theirs on exit)
    per_plan = []
    for plan in plans:
        mine, computed = computed[: len(plan.tasks)], computed[len(plan.tasks):]
        per_plan.append(mine)
    sets = [plan_induction_set(plan, plan.results(mine)) for plan, mine in zip(plans, per_plan)]
    set_tasks = [t for s in sets for t in s.tasks]
    set_computed = executor.map(induction_set_task, set_tasks, progress=progress,
                                desc="ablating the induction heads") if set_tasks else []
    paths_done = run_paths(plans, [plan.results(mine) for plan, mine in zip(plans, per_plan)], executor, progress)
    reports = []
    for plan, mine, induction_set, done in zip(plans, per_plan, sets, paths_done):
        set_mine, set_computed = set_computed[: len(induction_set.tasks)], set_computed[len(induction_set.tasks):]
        reports.append(finish_track(plan, mine, start, executor.describe(), induction_set, set_mine, done))
    return reports


def track(run: str | os.PathLike[str], cfg: TrackConfig | None = None, *, progress: bool = False,
          executor: Executor | None = None) -> TrackReport:
    """Score every checkpoint of `run` and find its phase change (module docstring).

    `executor` runs the missing checkpoints (`induction.jobs.executor`: this process by default, or Ray
    tasks), and with `cfg.ablate` the joint ablations of the final induction heads; the report is
    the same either way.
    """
    cfg = cfg or TrackConfig()
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    plan = plan_track(run, cfg, remote=executor.name != "local")
    return run_plans([plan], executor, start, progress)[0]
