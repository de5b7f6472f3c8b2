"""`induction track RUN`: head scores, ICL score and held-out loss over every checkpoint, and the phase change.

RUN is a run directory written by `induction train`; with --revisions it is a Hugging Face model
(directory or cached hub name) and each listed revision (Pythia ``step1000``, stanford-crfm
``checkpoint-400``) is scored in turn. Results of a run are cached in ``RUN/track/``, so a repeated or
interrupted track recomputes nothing already done.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from induction.cli import CLIError, check_out_path, check_plot_path, emit, save_plot
from induction.cli.scan import add_scan_arguments, read_freqs, score_config_from_args


def _revisions(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no revisions given")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"revisions repeated in {text!r}")
    return names


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "track", parents=[common], help="scores over every checkpoint of a run, and the phase change",
        description="Score every checkpoint of a training run (or the listed revisions of a Hugging Face model): "
                    "per-head prefix-matching, copying, previous- and duplicate-token scores, the ICL score and "
                    "the held-out loss; then find the phase change, the window in which the best prefix-matching "
                    "score rises and the ICL score falls (Olsson et al. 2022).",
    )
    p.add_argument("run", metavar="RUN", help="run directory (or, with --revisions, a Hugging Face model)")
    p.add_argument("--revisions", type=_revisions, metavar="R[,R...]",
                   help="published training checkpoints of a Hugging Face model, comma-separated (e.g. step1000,step2000)")
    p.add_argument("--plot", metavar="FILE", help="write the formation curves (.html, .png, .svg, .pdf)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write RUN/track/")
    add_scan_arguments(p)  # the detector and ICL options of `induction scan`, with the same defaults
    g = p.add_argument_group("held-out loss and phase change")
    g.add_argument("--held-out-sequences", type=int, default=64, help="sequences for the held-out loss (default: 64)")
    g.add_argument("--phase-threshold", type=float,
                   help="the best prefix-matching score must reach this for a phase change (default: --prefix-threshold)")
    p.set_defaults(func=run)


def track_config_from_args(args: argparse.Namespace):
    from induction.formation import TrackConfig

    return TrackConfig(detector=score_config_from_args(args), icl=not args.no_icl, text=args.text,
                       icl_sequences=args.icl_sequences, icl_seed=args.seed,
                       held_out_sequences=args.held_out_sequences, phase_threshold=args.phase_threshold)


def run(args: argparse.Namespace) -> int:
    from induction.formation import track, track_revisions
    from induction.models import MANIFEST_FILE
    from induction.report import provenance

    check_out_path(args)
    check_plot_path(args)
    cfg = track_config_from_args(args)
    freqs = read_freqs(args.freqs)
    start = time.perf_counter()
    prov = lambda settings, runtime: provenance(args.run, None, args.seed, settings, runtime)  # noqa: E731
    progress = not args.quiet
    if args.revisions:
        report = track_revisions(args.run, args.revisions, cfg, progress=progress, provenance_fn=prov,
                                 token_freqs=freqs)
    else:
        path = Path(args.run)
        if not path.exists():
            raise CLIError(f"induction: error: {args.run} does not exist")
        if not (path / MANIFEST_FILE).exists():
            raise CLIError(f"induction: error: {args.run} is not a run directory (no {MANIFEST_FILE}); "
                           "for a Hugging Face model's published checkpoints give --revisions")
        report = track(path, cfg, progress=progress, cache=not args.no_cache, provenance_fn=prov, token_freqs=freqs)
    report.provenance["runtime_s"] = round(time.perf_counter() - start, 3)
    emit(report, args)
    save_plot(report.plot, args)
    return 0
