"""`track --paths`: the paths into the final induction heads, path-patched at every checkpoint.

The final checkpoint's induction heads (the receivers) are known only once every checkpoint is
scored, so this is a pass of its own after the first, like `track --ablate`'s joint ablation: one
task per checkpoint (through the same executor, so on Ray too), each loading the checkpoint and
path-patching every head of an earlier layer (the senders) into every receiver's query, key and
value on the repeat loss of the ICL score's sequences
(`induction.measures.paths.repeat_loss_path_effects`). Results are cached per checkpoint in
``<cache>/paths/``, keyed by the checkpoint's identity, the receivers, the senders, the seed and the
source of the path-patching code; the checkpoint scores' own cache key does not change, so a plain
track and a track with `--paths` share it.

Each checkpoint gains ``paths`` (`{"sender", "receiver", "input", "effect", "ci"}` per path,
`[layer, head]` heads, effect in nats of repeat loss, positive: the path carries induction) and
``path_inputs`` (per input, the summed effect of its paths with a bootstrap interval over
sequences); the report gains a ``paths`` block saying when the key path forms relative to the
phase change (`induction.measures.paths.key_path_formation`, read by the report).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from induction.common.stats import DEFAULT_RESAMPLES
from induction.jobs.executor import Executor, LocalExecutor
from induction.loading.cache import ResultCache
from induction.loading.models import ModelRef
from induction.measures.icl import icl_tokens
from induction.measures.paths import input_totals, repeat_loss_path_effects

PATHS_DIR = "paths"
FORMED_FRACTION = 0.5
"""A path input has formed at the first step from which its summed effect stays >= this fraction of its final value."""


def paths_code_hash() -> str:
    """A hash of the source the path effects depend on (a changed definition invalidates the cache)."""
    import circuits.engine
    import circuits.paths
    import induction.measures.metrics
    import induction.measures.paths

    digest = hashlib.sha256()
    for module in (circuits.paths, circuits.engine, induction.measures.paths, induction.measures.metrics):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class PathsPlan:
    """The `--paths` pass of one track: the receivers and senders, cached results, and tasks."""

    receivers: list[tuple[int, int]]
    senders: list[tuple[int, int]]
    cached: dict[int, dict[str, Any]]
    tasks: list[tuple]
    indices: list[int]  # the checkpoint each task path-patches

    def results(self, computed: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        out = dict(self.cached)
        out.update(zip(self.indices, computed))
        return out


def plan_paths(plan: Any, results: list[dict[str, Any]]) -> PathsPlan:
    """One task per checkpoint of `plan` (an `induction.jobs.track.TrackPlan`) whose paths are not cached.

    Nothing to do without `plan.cfg.paths`, or when the final checkpoint has no induction head above layer 0.
    """
    cfg = plan.cfg
    if not getattr(cfg, "paths", False) or not plan.sources:
        return PathsPlan([], [], {}, [], [])
    final = max(zip(plan.sources, results), key=lambda pair: pair[0].step)[1]
    receivers = sorted((int(h["layer"]), int(h["head"])) for h in final["heads"] if h["is_induction"] and h["layer"] >= 1)
    if not receivers:
        return PathsPlan([], [], {}, [], [])
    top = max(layer for layer, _ in receivers)
    senders = sorted((int(h["layer"]), int(h["head"])) for h in final["heads"] if h["layer"] < top)
    directory = None if plan.cache_dir is None else plan.cache_dir / PATHS_DIR
    cache = ResultCache(directory, validate=valid_paths_result)
    cached, tasks, indices = {}, [], []
    for i, source in enumerate(plan.sources):
        identity = {**plan.identities[i], "receivers": [list(h) for h in receivers],
                    "senders": [list(h) for h in senders], "seed": cfg.scan.seed, "n_bootstrap": DEFAULT_RESAMPLES,
                    "code_sha256": paths_code_hash()}
        hit = cache.read(source.name, identity)
        if hit is not None:
            cached[i] = hit
        else:
            tasks.append((plan.refs[i], cfg, receivers, senders, directory, source.name, identity,
                          torch.get_num_threads()))
            indices.append(i)
    return PathsPlan(receivers, senders, cached, tasks, indices)


def valid_paths_result(result: dict[str, Any]) -> bool:
    """Whether a cached result is whole: finite effects for every path and input."""
    try:
        numbers = [float(p["effect"]) for p in result["paths"]]
        numbers += [float(result["path_inputs"][x]["effect"]) for x in "qkv"]
    except (KeyError, TypeError, ValueError):
        return False
    return bool(result["paths"]) and all(math.isfinite(x) for x in numbers)


def paths_task(ref: ModelRef, cfg: Any, receivers: list[tuple[int, int]], senders: list[tuple[int, int]],
               cache_dir: Path | None, name: str, identity: dict[str, Any], threads: int) -> dict[str, Any]:
    """Path-patch one checkpoint (module docstring); cache and return the result."""
    torch.set_num_threads(threads)
    model = ref.load()
    tokens, _ = icl_tokens(model, cfg.scan.icl)
    effects = repeat_loss_path_effects(model, tokens, receivers, senders, seed=cfg.scan.seed)
    result = {"paths": effects.records(n_bootstrap=DEFAULT_RESAMPLES, seed=cfg.scan.seed),
              "path_inputs": input_totals(effects, seed=cfg.scan.seed)}
    result = json.loads(json.dumps(result))  # as it reads back from the cache
    ResultCache(cache_dir).write(name, identity, result)
    return result


def run_paths(plans: Sequence[Any], results: Sequence[list[dict[str, Any]]], executor: Executor,
              progress: bool = False) -> list[tuple[PathsPlan, list[dict[str, Any]]]]:
    """The `--paths` pass of every plan in one `executor.map`: per plan, its `PathsPlan` and computed results."""
    path_plans = [plan_paths(plan, scored) for plan, scored in zip(plans, results)]
    tasks = [t for p in path_plans for t in p.tasks]
    computed = executor.map(paths_task, tasks, progress=progress, desc="path patching") if tasks else []
    out = []
    for p in path_plans:
        out.append((p, computed[: len(p.tasks)]))
        computed = computed[len(p.tasks):]
    return out


def with_paths(plan: Any, scored: list[dict[str, Any]],
               done: tuple[PathsPlan, list[dict[str, Any]]] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """`scored` with each checkpoint's ``paths`` and ``path_inputs``, and the report's ``paths`` block
    (None without `plan.cfg.paths`). `done`: `run_paths`' result for this plan (None: run it here)."""
    if not getattr(plan.cfg, "paths", False):
        return scored, None
    if done is None:
        done = run_paths([plan], [scored], LocalExecutor())[0]
    path_plan, computed = done
    by_index = path_plan.results(computed)
    out = [{**result, **by_index[i]} if i in by_index else result for i, result in enumerate(scored)]
    block = {"receivers": [list(h) for h in path_plan.receivers], "senders": [list(h) for h in path_plan.senders],
             "metric": "repeat-loss", "direction": "noising (sender outputs from fresh random tokens)",
             "computed": len(computed), "cached": len(path_plan.cached)}
    if not path_plan.receivers:
        block["unavailable"] = "the final checkpoint has no induction head above layer 0: no paths to patch"
    return out, block
