"""`induction sweep TARGETS`: many models, runs or revisions x scan or track, in one report and one figure."""

from __future__ import annotations

import argparse
from functools import partial

from induction.cli import add_device_arguments, add_options, add_ray_argument, executor_from_args, run_job, static
from induction.cli.scan import add_scan_arguments
from induction.cli.track import (
    TRACK,
    add_ablate_options,
    add_hub_options,
    add_keep_suspect,
    quiet_downloads,
    track_config_from_args,
)


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sweep", parents=[common], help="many models or runs x scan/track, one report",
        description="Scan or track many models, runs or revisions with the same settings, sequentially or as Ray "
                    "tasks (--ray), into one report and one comparison figure (best prefix-matching and ICL score "
                    "against step for every run; phase changes side by side).",
    )
    p.add_argument("targets", metavar="TARGETS",
                   help="comma-separated MODEL specs / run directories, or a .toml file with [[runs]] tables "
                        "(path, optional revisions (a list, or \"auto\") and label); hub names track their "
                        "published checkpoints")
    p.add_argument("--job", choices=static.constant("induction.jobs.sweep:JOBS"),
                    help="track every checkpoint of each run, or scan each model once "
                                               "(default: the file's job, else track)")
    p.add_argument("--plot", metavar="FILE", help="write the comparison figure (.html, .png, .svg, .pdf)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the runs' track/ caches")
    add_keep_suspect(p)
    p.add_argument("--revisions", default=None, help=argparse.SUPPRESS)  # per target, in the TOML file
    add_scan_arguments(p)
    add_options(p.add_argument_group("held-out loss and phase change"), "induction.jobs.track.config:TrackConfig", TRACK)
    add_ablate_options(p)
    add_hub_options(p)
    add_device_arguments(p)
    add_ray_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from induction.jobs.sweep import SweepConfig, read_targets, sweep

    targets, job = read_targets(args.targets)
    track = track_config_from_args(args)
    cfg = SweepConfig(job=args.job or job or "track", track=track, scan=track.scan, device=track.device,
                      dtype=track.dtype, offline=track.hub.offline, allow_pickle=track.hub.allow_pickle)
    quiet_downloads(args)
    with executor_from_args(args, cfg.placement[0]) as executor:
        return run_job(args, partial(sweep, executor=executor), targets, cfg,
                       lambda report: report.plot(x_axis=args.x_axis))
