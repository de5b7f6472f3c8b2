"""`induction scan MODEL`: every head's prefix-matching, copying, previous- and duplicate-token scores,
and its induction offset (shifted induction)."""

from __future__ import annotations

import argparse

from induction.cli import add_model_arguments, add_options, config_from, model_ref, run_job

PROMPTS = {"n_prompts": "--prompts", "seq_len": "--seq-len", "min_period": "--min-period",
           "max_period": "--max-period", "exclude_top": "--exclude-top", "exclude_bottom": "--exclude-bottom"}
DETECTOR = {"batch_size": "--batch-size", "prefix_threshold": "--prefix-threshold",
            "copying_threshold": "--copying-threshold", "copying_sources": "--copying-sources",
            "n_bootstrap": "--bootstrap", "min_offset": "--min-offset", "max_offset": "--max-offset",
            "offset_support": "--offset-support"}
ICL = {"n_sequences": "--icl-sequences", "text": ("--text", {"metavar": "FILE"})}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scan", parents=[common], help="per-head induction scores of a model",
                       description="Score every attention head for prefix-matching, copying, previous-token "
                                   "and duplicate-token behaviour on repeated random tokens, and name the induction heads "
                                   "(canonical, and shifted: attending d >= 2 tokens after earlier occurrences).")
    add_model_arguments(p)
    add_scan_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head heatmap (.html, .png, .svg, .pdf)")
    p.add_argument("--plot-kind", default="heatmap",
                   help="heatmap (default), scatter, or a score name (prefix_matching, copying, ...)")
    p.set_defaults(func=run)


def add_scan_arguments(p: argparse.ArgumentParser) -> None:
    """Detector and ICL options, shared with the commands that scan checkpoints (track)."""
    from induction.heads.config import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig
    from induction.measures.icl import ICLConfig

    g = p.add_argument_group("detector")
    add_options(g, RepeatedTokensConfig, PROMPTS)
    add_options(g, ScoreConfig, DETECTOR)
    g.add_argument("--freqs", metavar="FILE", help="token frequency table (JSON list, one count per token id) "
                                                   "for --exclude-top/--exclude-bottom")
    g = p.add_argument_group("ICL score")
    add_options(g, ICLConfig, ICL)
    g.add_argument("--no-icl", action="store_true", help="skip the ICL score")


def scan_config_from_args(args: argparse.Namespace):
    from induction.heads.config import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig
    from induction.jobs import ScanConfig
    from induction.measures.icl import ICLConfig

    prompts = config_from(RepeatedTokensConfig, args, PROMPTS, seed=args.seed)
    detector = config_from(ScoreConfig, args, DETECTOR, prompts=prompts)
    icl = None if args.no_icl else config_from(ICLConfig, args, {**ICL, "n_bootstrap": "--bootstrap"}, seed=args.seed)
    return ScanConfig(detector=detector, icl=icl, freqs=args.freqs)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import scan

    return run_job(args, scan, model_ref(args), scan_config_from_args(args), lambda report: report.plot(args.plot_kind))
