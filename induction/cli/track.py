"""`induction track RUN`: head scores, ICL score and held-out loss over every checkpoint, and the phase change.

RUN is a run directory written by `induction train`, a Hugging Face Trainer output directory
(its ``checkpoint-N/`` folders), or a folder holding one model directory per revision (``step1000/``,
...); of these only JSON and safetensors files are read, never the pickles a Trainer writes beside
them. With --revisions RUN may instead be a Hugging Face hub model, each listed revision (Pythia
``step1000``, stanford-crfm ``checkpoint-400``, OLMo ``stepN-tokensNB``; ``auto``: a log-spaced pick
of its step branches) downloaded and scored in turn. Results of a local RUN are cached in
``RUN/track/`` (of a hub model, in ``$INDUCTION_CACHE/track/<repo>/``), so a repeated or interrupted
track recomputes nothing already done.

--ablate zero|mean adds each head's ablation effect on the ICL score at every checkpoint, and the
final induction heads ablated together (with a layer-matched random control where one exists).
--paths adds the path-patching effects of every earlier head into the final induction heads'
queries, keys and values at every checkpoint, and when the key path forms (`induction.jobs.track.paths`).
"""

from __future__ import annotations

import argparse
from functools import partial

from induction.cli import (
    CLIError,
    add_device_arguments,
    add_options,
    add_ray_argument,
    add_source_arguments,
    comma_list,
    config_from,
    executor_from_args,
    one_of,
    run_job,
    static,
)
from induction.cli.scan import add_scan_arguments, scan_config_from_args

TRACK_CONFIG = "induction.jobs.track.config:TrackConfig"
TRACK = {"held_out_sequences": "--held-out-sequences", "phase_threshold": "--phase-threshold",
         "audit_tolerance": "--audit-tolerance"}
ABLATE_CHOICES = static.constant("induction.jobs.track.config:TRACK_ABLATIONS")
HUB = {"max_revisions": ("--max-revisions", {"metavar": "N"}), "tokens_per_step": ("--tokens-per-step", {"metavar": "N"})}
X_AXES = static.constant("induction.plots.axis:X_AXES")
ABLATE = {"ablate": ("--ablate", {"type": one_of("ablation method", ABLATE_CHOICES), "metavar": "|".join(ABLATE_CHOICES)}),
          "ablate_draws": ("--ablate-draws", {"metavar": "N"})}


def add_ablate_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser.add_argument_group("ablation over training"), TRACK_CONFIG, ABLATE)


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    """How a hub model's published checkpoints are fetched (`induction.loading.revisions.HubConfig`)."""
    g = parser.add_argument_group("published checkpoints (hub models)")
    add_options(g, "induction.loading.revisions:HubConfig", HUB)
    g.add_argument("--keep-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each downloaded revision in the Hugging Face cache; --no-keep-weights deletes it once "
                        "scored, so the disk holds one revision at a time (default: keep)")
    g.add_argument("--x-axis", default="step", type=one_of("x axis", X_AXES), metavar="step|tokens",
                   help="the formation figure's axis: training step or tokens seen (default: step)")
    add_source_arguments(parser)


def hub_config_from_args(args: argparse.Namespace):
    from induction.loading.revisions import HubConfig

    fixed = {} if args.keep_weights is None else {"keep_weights": args.keep_weights}
    return config_from(HubConfig, args, HUB, offline=args.offline, allow_pickle=args.allow_pickle, **fixed)


def quiet_downloads(args: argparse.Namespace) -> None:
    """--quiet: no download progress bars either (huggingface_hub's, process-wide)."""
    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def add_keep_suspect(parser: argparse.ArgumentParser) -> None:
    """--keep-suspect (`TrackConfig.keep_suspect`), for track and sweep."""
    parser.add_argument("--keep-suspect", action="store_true",
                        help="keep the checkpoints the audit finds suspect (identical weights, distance from the "
                             "first going backwards) in the phase-change fit (default: left out)")


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "track", parents=[common], help="scores over every checkpoint of a run, and the phase change",
        description="Score every checkpoint of a training run (or the listed revisions of a Hugging Face model): "
                    "per-head prefix-matching, copying, previous- and duplicate-token scores, the ICL score and "
                    "the held-out loss; then find the phase change, the window in which the best prefix-matching "
                    "score rises and the ICL score falls (Olsson et al. 2022).",
    )
    p.add_argument("run", metavar="RUN", help="run directory, Hugging Face Trainer output directory (checkpoint-N/), "
                                              "folder of revision directories, or (with --revisions) a hub model")
    p.add_argument("--revisions", type=comma_list("revisions"), metavar="R[,R...]|auto",
                   help="published training checkpoints of a Hugging Face hub model, comma-separated (e.g. "
                        "step1000,step2000), or auto: a log-spaced pick of its step branches (--max-revisions); "
                        "for a folder of revision directories, the folders to score")
    p.add_argument("--plot", metavar="FILE", help="write the formation curves (.html, .png, .svg, .pdf)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write RUN/track/")
    add_keep_suspect(p)
    add_scan_arguments(p)  # the detector and ICL options of `induction scan`, with the same defaults
    add_device_arguments(p)
    add_ray_argument(p)
    add_options(p.add_argument_group("held-out loss and phase change"), TRACK_CONFIG, TRACK)
    add_ablate_options(p)
    add_hub_options(p)
    p.add_argument("--paths", action="store_true",
                   help="also path-patch every earlier head into the final induction heads' query, key and value at "
                        "every checkpoint (repeat-loss change when noised, with 95%% intervals)")
    g = p.add_argument_group("attention patterns over training")
    g.add_argument("--patterns", metavar="L1H0,...", type=comma_list("head", item=str),
                   help="with --plot FILE.html: these heads' attention patterns at each checkpoint on a slider, "
                        "below the formation curves (a local RUN only)")
    g.add_argument("--pattern-frames", type=int, default=24, metavar="N",
                   help="most checkpoints the pattern slider shows, evenly spaced (default: 24)")
    p.set_defaults(func=run)


def track_config_from_args(args: argparse.Namespace):
    from induction.jobs import TrackConfig

    if args.ablate_draws is not None and args.ablate is None:  # it would be silently ignored
        raise CLIError("induction: error: --ablate-draws needs --ablate zero|mean")
    return config_from(TrackConfig, args, {**TRACK, **ABLATE}, scan=scan_config_from_args(args), revisions=args.revisions,
                       cache=not args.no_cache, device=args.device, dtype=args.dtype, hub=hub_config_from_args(args),
                       paths=bool(getattr(args, "paths", False)), keep_suspect=args.keep_suspect)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import track

    cfg = track_config_from_args(args)
    quiet_downloads(args)
    if args.patterns:
        return run_with_patterns(args, cfg)
    with executor_from_args(args, cfg.device) as executor:
        return run_job(args, partial(track, executor=executor), args.run, cfg,
                       lambda report: report.plot(x_axis=args.x_axis))


def run_with_patterns(args: argparse.Namespace, cfg) -> int:
    """`--patterns`: the heads' patterns at each checkpoint (computed first: a bad head fails before the
    track), then the track; --plot is the formation curves above the pattern slider, an .html page."""
    import sys
    from pathlib import Path

    from induction.cli import check_out_path, check_plot_path, emit
    from induction.heads.patterns import parse_head
    from induction.jobs import track
    from induction.jobs.patterns import mark_window, run_patterns
    from induction.plots.page import figure_div
    from induction.plots.patterns import save_pattern_view

    if args.revisions:
        raise CLIError("induction: error: --patterns needs a local RUN, not --revisions")
    if not args.plot or Path(args.plot).suffix.lower() != ".html":
        raise CLIError("induction: error: --patterns draws the pattern slider into --plot FILE.html; name a .html file")
    if args.pattern_frames < 2:
        raise CLIError(f"induction: error: --pattern-frames must be >= 2, got {args.pattern_frames}")
    try:
        heads = tuple(parse_head(h) for h in args.patterns)
        check_out_path(args)
        check_plot_path(args)
        frames = run_patterns(args.run, heads, cfg.scan.detector.prompts, max_frames=args.pattern_frames,
                              device=args.device, dtype=args.dtype)
    except ValueError as exc:
        if not str(exc).startswith("heads: "):
            raise
        raise CLIError(f"induction: error: --patterns {str(exc).removeprefix('heads: ')}") from None
    with executor_from_args(args, cfg.device) as executor:
        report = track(args.run, cfg, executor=executor, progress=not args.quiet)
    emit(report, args)
    if report.phase_change is not None:
        frames = mark_window(frames, report.phase_change.start_step, report.phase_change.end_step)
    save_pattern_view(frames, args.plot, title=f"Attention patterns over training — {args.run}", encoding="uint8",
                      before=figure_div(report.plot(), "formation", include_plotlyjs=True))
    if not args.quiet:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
