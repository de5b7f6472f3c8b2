"""`induction patch MODEL`: activation (or attribution, AtP*) patching of each head into a corrupted run,
or with --paths path patching of each sender -> receiver q/k/v path."""

from __future__ import annotations

import argparse

from induction.cli import (
    CLIError,
    add_model_arguments,
    add_options,
    comma_list,
    config_from,
    model_ref,
    run_job,
    static,
)
from induction.cli.ablate import add_metric_arguments, metric_spec_from_args

PATHS = {"name_fraction": ("--name-fraction", {"metavar": "F"})}


def parse_head(text: str) -> tuple[int, int]:
    """"L1H3" -> (1, 3); ValueError otherwise (comma_list turns it into a one-line error)."""
    import re

    match = re.fullmatch(r"[Ll](\d+)[Hh](\d+)", text)
    if not match:
        raise ValueError(text)
    return int(match.group(1)), int(match.group(2))


parse_head.__name__ = "head"


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    methods = static.constant("induction.measures.effects:PATCH_METHODS")
    p = sub.add_parser("patch", parents=[common], help="each head's effect when patched from clean into corrupted",
                       description="Patch each head's output from the clean run (repeats) into a corrupted run (fresh "
                                   "random tokens) and report the metric against the clean labels. exact: activation "
                                   "patching; attribution: its gradient estimate (two forwards, one backward); "
                                   "atp-star: AtP* (Kramar et al. 2024: later attention patterns recomputed, GradDrop). "
                                   "--paths: path patching of each sender head's output into a later receiver head's "
                                   "query, key or value only (noising: the clean run, each path carrying the sender's "
                                   "output from the corrupted run).")
    add_model_arguments(p)
    add_options(p, "induction.jobs:PatchConfig", {"method": ("--method", {"choices": methods})})
    add_metric_arguments(p)
    g = p.add_argument_group("path patching")
    g.add_argument("--paths", action="store_true", help="each (sender, receiver, q|k|v) path's effect")
    g.add_argument("--senders", type=comma_list("senders", item=parse_head), metavar="L0H1,...",
                   help="the paths' sender heads (default: every head below a receiver)")
    g.add_argument("--receivers", type=comma_list("receivers", item=parse_head), metavar="L1H0,...",
                   help="the paths' receiver heads (default: every head of layer 1 and above)")
    add_options(g, "induction.jobs:PatchConfig", PATHS)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head effect heatmap (with --paths: sender x "
                                                  "receiver heatmaps for q, k and v)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import PatchConfig, patch

    if not args.paths and (args.senders or args.receivers or args.name_fraction is not None):
        raise CLIError("induction: error: --senders, --receivers and --name-fraction need --paths")
    fixed = {"paths": True, "senders": args.senders, "receivers": args.receivers} if args.paths else {}
    cfg = config_from(PatchConfig, args, {"method": "--method", **PATHS}, metric=metric_spec_from_args(args), **fixed)
    return run_job(args, patch, model_ref(args), cfg, lambda report: report.plot())
