"""`induction ablate MODEL`: each head's effect on a metric (the ICL score by default) when it is ablated."""

from __future__ import annotations

import argparse

from induction.cli import add_model_arguments, add_options, config_from, model_ref, run_job, static

METRIC = {"sequences": "--sequences", "seq_len": "--seq-len", "task": "--task", "shots": "--shots"}
ABLATE = {"top_k": "--top-k", "draws": "--draws"}


def add_metric_arguments(p: argparse.ArgumentParser) -> None:
    """The metric options shared by `ablate` and `patch` (`induction.jobs.MetricSpec`)."""
    metrics = static.constant("induction.measures.metrics:METRICS")
    add_options(p.add_argument_group("metric"), "induction.jobs:MetricSpec",
                {"name": ("--metric", {"choices": metrics}), **METRIC})


def metric_spec_from_args(args: argparse.Namespace):
    from induction.jobs import MetricSpec

    return config_from(MetricSpec, args, {"name": "--metric", **METRIC}, seed=args.seed)


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    methods = static.constant("induction.measures.effects:ABLATION_METHODS")
    p = sub.add_parser("ablate", parents=[common], help="each head's effect on ICL when ablated",
                       description="Ablate one head at a time and report the metric and its change. With --top-k, also "
                                   "ablate the top-k prefix-matching heads together and compare with layer-matched "
                                   "random head sets (Crosbie & Shutova 2024).")
    add_model_arguments(p)
    add_options(p, "induction.jobs:AblateConfig", {"method": ("--method", {"choices": methods}), **ABLATE})
    add_metric_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head effect heatmap")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import AblateConfig, ablate

    cfg = config_from(AblateConfig, args, {"method": "--method", **ABLATE}, metric=metric_spec_from_args(args))
    return run_job(args, ablate, model_ref(args), cfg, lambda report: report.plot())
