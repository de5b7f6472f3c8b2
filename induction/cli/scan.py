"""`induction scan MODEL`: every head's prefix-matching, copying, previous- and duplicate-token scores."""

from __future__ import annotations

import argparse
import time

from induction.cli import add_model_arguments, check_out_path, check_plot_path, emit, load_model_from_args, save_plot


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scan", parents=[common], help="per-head induction scores of a model",
                       description="Score every attention head for prefix-matching, copying, previous-token "
                                   "and duplicate-token behaviour on repeated random tokens, and name the induction heads.")
    add_model_arguments(p)
    add_scan_arguments(p)
    p.add_argument("--plot", metavar="FILE", help="write the layer x head heatmap (.html, .png, .svg, .pdf)")
    p.add_argument("--plot-kind", default="heatmap",
                   help="heatmap (default), scatter, or a score name (prefix_matching, copying, ...)")
    p.set_defaults(func=run)


def add_scan_arguments(p: argparse.ArgumentParser) -> None:
    """Detector and ICL options, shared with commands that score heads (track, demo)."""
    g = p.add_argument_group("detector")
    g.add_argument("--prompts", type=int, default=64, help="repeated-random-token prompts (default: 64)")
    g.add_argument("--seq-len", type=int, help="prompt length incl. BOS (default: min(context, 256))")
    g.add_argument("--min-period", type=int, help="shortest repeated segment (default: max(3, len/8))")
    g.add_argument("--max-period", type=int, help="longest repeated segment (default: len/2)")
    g.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default: 16)")
    g.add_argument("--prefix-threshold", type=float, default=0.4, help="induction head: prefix-matching >= this (default: 0.4)")
    g.add_argument("--copying-threshold", type=float, default=0.5, help="induction head: copying >= this (default: 0.5)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (0: none; default: 1000)")
    g.add_argument("--freqs", metavar="FILE", help="token frequency table (JSON list, one count per token id) "
                                                   "for --exclude-top/--exclude-bottom")
    g.add_argument("--exclude-top", type=int, default=0, help="with --freqs: drop the N most frequent tokens from prompts")
    g.add_argument("--exclude-bottom", type=int, default=0, help="with --freqs: drop the N least frequent tokens")
    g = p.add_argument_group("ICL score")
    g.add_argument("--text", metavar="FILE", help="text file for the ICL score (models with a tokenizer)")
    g.add_argument("--icl-sequences", type=int, default=64, help="sequences for the ICL score (default: 64)")
    g.add_argument("--no-icl", action="store_true", help="skip the ICL score")


def score_config_from_args(args: argparse.Namespace):
    from induction.prompts import RepeatedTokensConfig
    from induction.scores import ScoreConfig

    prompts = RepeatedTokensConfig(n_prompts=args.prompts, seq_len=args.seq_len, min_period=args.min_period,
                                   max_period=args.max_period, exclude_top=args.exclude_top,
                                   exclude_bottom=args.exclude_bottom, seed=args.seed)
    return ScoreConfig(prompts=prompts, batch_size=args.batch_size, prefix_threshold=args.prefix_threshold,
                       copying_threshold=args.copying_threshold, n_bootstrap=args.bootstrap)


def run(args: argparse.Namespace) -> int:
    check_out_path(args)
    check_plot_path(args)
    start = time.perf_counter()
    model = load_model_from_args(args)
    report = scan_model(model, args, start)
    emit(report, args)
    save_plot(lambda: report.plot(kind=args.plot_kind), args)
    return 0


def scan_model(model, args: argparse.Namespace, start: float):
    import torch

    from induction.icl import icl_score
    from induction.models import model_info
    from induction.report import ScanReport, provenance
    from induction.scores import score_heads

    torch.manual_seed(args.seed)
    cfg = score_config_from_args(args)
    scores = score_heads(model, cfg, token_freqs=read_freqs(args.freqs), progress=not args.quiet)
    icl = None
    if not args.no_icl:
        icl = icl_score(model, n_sequences=args.icl_sequences, seed=args.seed, text=args.text,
                        n_bootstrap=args.bootstrap, progress=not args.quiet)
    info = model_info(model)
    settings = {"detector": cfg.to_dict(), "icl": None if icl is None else {k: v for k, v in icl.to_dict().items()
                                                                              if k in ("early_pos", "late_pos", "n_sequences", "seq_len", "data")}}
    prov = provenance(info.spec, info.checkpoint, args.seed, settings, time.perf_counter() - start)
    return ScanReport(model=info.spec, checkpoint=info.checkpoint, scores=scores, icl=icl, provenance=prov)


def read_freqs(path: str | None):
    """A token frequency table from a JSON list of counts (None when no file is given)."""
    if path is None:
        return None
    import json
    from pathlib import Path

    import torch

    try:
        counts = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--freqs {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--freqs {path} is not a JSON list of counts ({str(exc).splitlines()[0]})") from None
    if not isinstance(counts, list) or not all(isinstance(c, (int, float)) for c in counts):
        raise ValueError(f"--freqs {path} must hold a JSON list of numbers, one per token id")
    return torch.tensor(counts, dtype=torch.float)
