"""`induction patch MODEL`: activation (or attribution) patching of each head into a corrupted run."""

from __future__ import annotations

import argparse

from induction.cli import add_model_arguments, add_options, config_from, model_ref, run_job
from induction.cli.ablate import add_metric_arguments, metric_spec_from_args


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.jobs import PatchConfig
    from induction.measures.effects import PATCH_METHODS

    p = sub.add_parser("patch", parents=[common], help="each head's effect when patched from clean into corrupted",
                       description="Patch each head's output from the clean run (repeats) into a corrupted run (fresh "
                                   "random tokens) and report the metric against the clean labels. exact: activation "
                                   "patching; attribution: its gradient estimate (two forwards, one backward).")
    add_model_arguments(p)
    add_options(p, PatchConfig, {"method": ("--method", {"choices": PATCH_METHODS})})
    add_metric_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head effect heatmap")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import PatchConfig, patch

    cfg = config_from(PatchConfig, args, {"method": "--method"}, metric=metric_spec_from_args(args))
    return run_job(args, patch, model_ref(args), cfg, lambda report: report.plot())
