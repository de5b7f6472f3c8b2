"""`induction bench`: every head-finding method scored against hand-built models with known heads."""

from __future__ import annotations

import argparse

from induction.cli import add_device_arguments, add_options, comma_list, config_from, run_job, static

BENCH = {"prompts": "--prompts", "sequences": "--sequences", "name_fraction": "--name-fraction"}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    suite = tuple(static.constant("induction.bench.suite:SUITE"))
    stream_metrics = static.constant("induction.measures.metrics:STREAM_METRICS")
    p = sub.add_parser("bench", parents=[common], help="every method scored against hand-built models",
                       description="Build hand-built models whose heads are known (attention-only and LayerNorm + MLP, "
                                   "two sizes) and score every method against the truth: the detector's is_induction "
                                   "and is_shifted_induction flags, zero/mean/resample/pattern ablation, exact and "
                                   "attribution patching, and a random control: precision, recall and the rank of "
                                   "the true heads.")
    add_options(p, "induction.bench.suite:BenchConfig", {
        "models": ("--models", {"type": comma_list("bench model", suite), "metavar": "NAME,..."}),
        **BENCH,
        "metric": ("--metric", {"choices": stream_metrics}),
    })
    add_device_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the method x model recall/precision heatmaps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from induction.jobs.bench import BenchConfig, bench

    cfg = config_from(BenchConfig, args, {"models": "--models", "metric": "--metric", **BENCH}, seed=args.seed,
                      device=args.device, dtype=args.dtype)
    return run_job(args, lambda _target, config, progress: bench(config, progress=progress), None, cfg,
                   lambda report: report.plot())
