"""`bench`: every head-finding method scored against hand-built models with known heads (`induction bench`).

Its Config, `BenchConfig`, lives with the benchmark (`induction.bench.suite`) and is re-exported here.
"""

from __future__ import annotations

import time

import torch

from circuits.progress import progress_bar
from induction.bench.suite import BenchConfig, bench_model, suite_model
from induction.common.provenance import provenance
from induction.loading.devices import place, placement, resolve_device
from induction.loading.memory import check_job_memory
from induction.reports.bench import BenchReport

__all__ = ["BenchConfig", "bench"]


def bench(cfg: BenchConfig | None = None, *, progress: bool = False) -> BenchReport:
    """Build each model of `cfg.models`, score every method on it, and report (`induction.bench.suite`).

    On the CPU it runs single-threaded (restored afterwards): the models are small, and threads that
    wait for a busy core cost more than they give (README, "Design notes").
    """
    cfg = cfg or BenchConfig()
    start = time.perf_counter()
    threads = torch.get_num_threads()
    results, placed = [], {}
    try:
        if resolve_device(cfg.device).type == "cpu":
            torch.set_num_threads(1)
        for name in progress_bar(cfg.models, desc="benchmarking", unit="model", stage=True, enabled=progress):
            model, truth = suite_model(name)
            place(model, cfg.device, cfg.dtype)
            seq = int(model.cfg.n_ctx)
            check_job_memory(f"prompts = {cfg.prompts}", model, cfg.prompts * 8 * seq, min(cfg.prompts, 16), seq)
            check_job_memory(f"sequences = {cfg.sequences}", model, cfg.sequences * 8 * seq, 2 * cfg.sequences, seq)
            results.append(bench_model(model, truth, name, cfg, progress=progress))
            placed = placement(model)
    finally:
        torch.set_num_threads(threads)
    prov = provenance("hand-built suite", None, cfg.seed, cfg.to_dict(), time.perf_counter() - start, **placed)
    return BenchReport(models=results, metric=cfg.metric, name_fraction=cfg.name_fraction, provenance=prov)

