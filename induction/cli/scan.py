"""`induction scan MODEL`: every head's prefix-matching, copying, previous- and duplicate-token scores,
and its induction offset (shifted induction)."""

from __future__ import annotations

import argparse
from pathlib import Path

from induction.cli import (
    CLIError,
    add_model_arguments,
    add_options,
    check_out_path,
    check_plot_path,
    comma_list,
    config_from,
    emit,
    model_ref,
    run_job,
)

PROMPTS = {"n_prompts": "--prompts", "seq_len": "--seq-len", "min_period": "--min-period",
           "max_period": "--max-period", "exclude_top": "--exclude-top", "exclude_bottom": "--exclude-bottom"}
DETECTOR = {"batch_size": "--batch-size", "prefix_threshold": "--prefix-threshold",
            "copying_threshold": "--copying-threshold", "copying_sources": "--copying-sources",
            "n_bootstrap": "--bootstrap", "min_offset": "--min-offset", "max_offset": "--max-offset",
            "offset_support": "--offset-support"}
PATTERNS = {"n_prompts": "--pattern-prompts", "max_positions": "--pattern-positions"}
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
    g = p.add_argument_group("attention patterns")
    g.add_argument("--patterns", metavar="L1H0,...", type=comma_list("head", item=str),
                   help="keep these heads' attention patterns on the detector's prompts (or 'induction': the detected "
                        "induction heads; 'all': every head): their attention on the induction stripe in the report, "
                        "and with --plot FILE.html the heatmap linked to a pattern viewer")
    add_options(g, "induction.heads.patterns:PatternConfig", PATTERNS)
    p.set_defaults(func=run)


def add_scan_arguments(p: argparse.ArgumentParser) -> None:
    """Detector and ICL options, shared with the commands that scan checkpoints (track)."""
    g = p.add_argument_group("detector")
    add_options(g, "induction.inputs.prompts:RepeatedTokensConfig", PROMPTS)
    add_options(g, "induction.heads.config:ScoreConfig", DETECTOR)
    g.add_argument("--freqs", metavar="FILE", help="token frequency table (JSON list, one count per token id) "
                                                   "for --exclude-top/--exclude-bottom")
    g = p.add_argument_group("ICL score")
    add_options(g, "induction.measures.icl:ICLConfig", ICL)
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

    cfg = scan_config_from_args(args)
    if not getattr(args, "patterns", None):
        return run_job(args, scan, model_ref(args), cfg, lambda report: report.plot(args.plot_kind))
    return run_with_patterns(args, cfg)


def run_with_patterns(args: argparse.Namespace, cfg) -> int:
    """`--patterns`: the heads are checked against the model before scoring; --plot is the heatmap
    linked to the pattern viewer, an .html page."""
    import sys
    from dataclasses import replace

    from induction.heads.patterns import PatternConfig, parse_head
    from induction.jobs import scan
    from induction.jobs.scan import PATTERN_SETS
    from induction.plots.patterns import save_pattern_view

    named_set = len(args.patterns) == 1 and args.patterns[0] in PATTERN_SETS
    try:
        heads = args.patterns if named_set else tuple(parse_head(h) for h in args.patterns)
    except ValueError as exc:
        raise CLIError(f"induction: error: --patterns {str(exc).removeprefix('heads: ')}; or one of "
                       f"{', '.join(PATTERN_SETS)}") from None
    view = config_from(PatternConfig, args, PATTERNS)
    if args.plot and Path(args.plot).suffix.lower() != ".html":
        raise CLIError(f"induction: error: --plot {args.plot}: with --patterns the figure is the pattern viewer; "
                       "name a .html file")
    check_out_path(args)
    check_plot_path(args)
    model = model_ref(args).load()
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    bad = [] if named_set else [f"L{layer}H{h}" for layer, h in heads if not (layer < n_layers and h < n_heads)]
    if bad:
        raise CLIError(f"induction: error: --patterns {', '.join(bad)}: this model has layers 0-{n_layers - 1} "
                       f"and heads 0-{n_heads - 1}")
    report = scan(model, replace(cfg, patterns=heads, pattern_view=view), progress=not args.quiet)
    emit(report, args)
    if args.plot:
        save_pattern_view(report.patterns, args.plot, title=f"Attention patterns — {report.model}",
                          heatmap=report.plot("heatmap"), note="add it to --patterns")
        if not args.quiet:
            print(f"wrote {args.plot}", file=sys.stderr)
    return 0
