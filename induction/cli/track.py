"""`induction track RUN`: head scores, ICL score and held-out loss over every checkpoint, and the phase change.

RUN is a run directory written by `induction train`, a Hugging Face Trainer output directory
(its ``checkpoint-N/`` folders), or a folder holding one model directory per revision (``step1000/``,
...); of these only JSON and safetensors files are read, never the pickles a Trainer writes beside
them. With --revisions RUN may instead be a cached hub model, each listed revision (Pythia
``step1000``, stanford-crfm ``checkpoint-400``) scored in turn. Results of a local RUN are cached in
``RUN/track/``, so a repeated or interrupted track recomputes nothing already done.

--ablate zero|mean adds each head's ablation effect on the ICL score at every checkpoint, and the
final induction heads ablated together (with a layer-matched random control where one exists).
"""

from __future__ import annotations

import argparse
from functools import partial

from induction.cli import (
    CLIError,
    add_device_arguments,
    add_options,
    add_ray_argument,
    comma_list,
    config_from,
    executor_from_args,
    one_of,
    run_job,
)
from induction.cli.scan import add_scan_arguments, scan_config_from_args

TRACK = {"held_out_sequences": "--held-out-sequences", "phase_threshold": "--phase-threshold",
         "audit_tolerance": "--audit-tolerance"}
ABLATE_CHOICES = ("zero", "mean")  # = induction.jobs.track.TRACK_ABLATIONS (not imported: the CLI loads lazily)
ABLATE = {"ablate": ("--ablate", {"type": one_of("ablation method", ABLATE_CHOICES), "metavar": "zero|mean"}),
          "ablate_draws": ("--ablate-draws", {"metavar": "N"})}


def add_ablate_options(parser: argparse.ArgumentParser) -> None:
    from induction.jobs import TrackConfig

    add_options(parser.add_argument_group("ablation over training"), TrackConfig, ABLATE)


def add_keep_suspect(parser: argparse.ArgumentParser) -> None:
    """--keep-suspect (`TrackConfig.keep_suspect`), for track and sweep."""
    parser.add_argument("--keep-suspect", action="store_true",
                        help="keep the checkpoints the audit finds suspect (identical weights, distance from the "
                             "first going backwards) in the phase-change fit (default: left out)")


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.jobs import TrackConfig

    p = sub.add_parser(
        "track", parents=[common], help="scores over every checkpoint of a run, and the phase change",
        description="Score every checkpoint of a training run (or the listed revisions of a Hugging Face model): "
                    "per-head prefix-matching, copying, previous- and duplicate-token scores, the ICL score and "
                    "the held-out loss; then find the phase change, the window in which the best prefix-matching "
                    "score rises and the ICL score falls (Olsson et al. 2022).",
    )
    p.add_argument("run", metavar="RUN", help="run directory, Hugging Face Trainer output directory (checkpoint-N/), "
                                              "folder of revision directories, or (with --revisions) a hub model")
    p.add_argument("--revisions", type=comma_list("revisions"), metavar="R[,R...]",
                   help="published training checkpoints of a Hugging Face model, comma-separated (e.g. step1000,step2000); "
                        "for a folder of revision directories, the folders to score")
    p.add_argument("--plot", metavar="FILE", help="write the formation curves (.html, .png, .svg, .pdf)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write RUN/track/")
    add_keep_suspect(p)
    add_scan_arguments(p)  # the detector and ICL options of `induction scan`, with the same defaults
    add_device_arguments(p)
    add_ray_argument(p)
    add_options(p.add_argument_group("held-out loss and phase change"), TrackConfig, TRACK)
    add_ablate_options(p)
    p.set_defaults(func=run)


def track_config_from_args(args: argparse.Namespace):
    from induction.jobs import TrackConfig

    if args.ablate_draws is not None and args.ablate is None:  # it would be silently ignored
        raise CLIError("induction: error: --ablate-draws needs --ablate zero|mean")
    return config_from(TrackConfig, args, {**TRACK, **ABLATE}, scan=scan_config_from_args(args), revisions=args.revisions,
                       cache=not args.no_cache, device=args.device, dtype=args.dtype,
                       keep_suspect=args.keep_suspect)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import track

    cfg = track_config_from_args(args)
    with executor_from_args(args, cfg.device) as executor:
        return run_job(args, partial(track, executor=executor), args.run, cfg, lambda report: report.plot())
