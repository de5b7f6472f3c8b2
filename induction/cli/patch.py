"""`induction patch MODEL`: activation (or attribution) patching of each head into a corrupted run."""

from __future__ import annotations

import argparse
import time

from induction.cli import add_model_arguments, check_out_path, check_plot_path, emit, load_model_from_args, save_plot
from induction.cli.ablate import add_metric_arguments, metric_setup_from_args


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.effects import PATCH_METHODS

    p = sub.add_parser("patch", parents=[common], help="each head's effect when patched from clean into corrupted",
                       description="Patch each head's output from the clean run (repeats) into a corrupted run (fresh "
                                   "random tokens) and report the metric against the clean labels. exact: activation "
                                   "patching; attribution: its gradient estimate (two forwards, one backward).")
    add_model_arguments(p)
    p.add_argument("--method", choices=PATCH_METHODS, default="exact", help="exact or attribution (default: exact)")
    add_metric_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head effect heatmap")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from induction.effects import HeadEffectReport, patching_effects
    from induction.models import model_info
    from induction.report import provenance

    check_out_path(args)
    check_plot_path(args)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = load_model_from_args(args)
    setup = metric_setup_from_args(model, args)
    baseline, clean, values = patching_effects(model, setup, args.method, progress=not args.quiet)
    info = model_info(model)
    settings = {"metric": args.metric, "sequences": args.sequences, "data": setup.description, "method": args.method,
                "corrupted": "fresh random tokens at every content position"}
    report = HeadEffectReport(model=info.spec, command="patch", method=args.method, metric=args.metric,
                              baseline=baseline, values=values, reference=clean,
                              provenance=provenance(info.spec, info.checkpoint, args.seed, settings, time.perf_counter() - start))
    emit(report, args)
    save_plot(report.plot, args)
    return 0
