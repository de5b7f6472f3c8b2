"""`induction train --out DIR`: train a toy model on the synthetic stream, with checkpoints.

Here --out names the run directory (CONTRACT), not a report file; the report (the run's checkpoints)
goes to stdout. With --resume an interrupted run continues from its last checkpoint; options not
given then take the run's saved values, and options given must agree with them (--seed 0, the
default, stands for the run's own seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from induction.cli import CLIError

MODEL = {"n_layers": "--layers", "d_model": "--d-model", "n_heads": "--heads", "n_ctx": "--ctx", "d_vocab": "--vocab"}
OPTIM = {"batch_size": "--batch-size", "weight_decay": "--weight-decay"}
SCHEDULE = {"steps": "--steps", "n_log_checkpoints": "--log-checkpoints", "checkpoint_every": "--checkpoint-every"}
DATA = {"min_segment": "--min-segment", "max_segment": "--max-segment"}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.cli import add_device_arguments, add_options, static

    train = "induction.training.config"
    DATA_RECIPES, DEFAULT_BATCH, DEFAULT_LR, DEFAULT_MIN_SEGMENT, DEFAULT_WARMUP = (
        static.constant(f"{train}:{name}")
        for name in ("DATA_RECIPES", "DEFAULT_BATCH", "DEFAULT_LR", "DEFAULT_MIN_SEGMENT", "DEFAULT_WARMUP"))
    ModelConfig, OptimConfig, ScheduleConfig = (f"{train}:{name}" for name in ("ModelConfig", "OptimConfig", "ScheduleConfig"))
    ToyDataConfig = "induction.inputs.repeated:ToyDataConfig"
    DATA_STREAMS = static.constant("induction.inputs.streams:DATA_STREAMS")

    p = sub.add_parser(
        "train", parents=[common], help="train a toy model with checkpoints (a run directory)",
        description="Train a small TL-native transformer on random segments of random length tiled to the "
                    "context, saving checkpoints (log-spaced, every N steps, final) to a run directory that "
                    "`induction scan/track` read. Defaults: the 2-layer attention-only model that forms "
                    "induction heads in a few hundred steps. Here --out DIR (required) is the run directory; "
                    "the report goes to stdout.",
    )
    g = p.add_argument_group("model")
    add_options(g, ModelConfig, {**MODEL, "d_mlp": "--d-mlp"})
    kind = g.add_mutually_exclusive_group()
    kind.add_argument("--attn-only", dest="attn_only", action="store_const", const=True,
                      help="attention-only, no LayerNorm (default)")
    kind.add_argument("--mlp", dest="attn_only", action="store_const", const=False,
                      help=f"GPT-2 style: LayerNorm and an MLP in every block (by default lr {DEFAULT_LR['mlp']}, "
                           f"{DEFAULT_WARMUP['mlp']} warm-up steps, batch {DEFAULT_BATCH['mlp']}, segments of "
                           f"at least {DEFAULT_MIN_SEGMENT['mlp']} tokens: the recipe that forms canonical induction heads)")
    g = p.add_argument_group("optimisation")
    add_options(g, OptimConfig, {**OPTIM, "lr": "--lr"})
    add_options(g, ScheduleConfig, {"steps": "--steps", "warmup_steps": "--warmup-steps"})
    g = p.add_argument_group("checkpoints and data")
    add_options(g, ScheduleConfig, {k: v for k, v in SCHEDULE.items() if k != "steps"})
    g.add_argument("--min-segment", type=int, help=f"shortest repeated segment (default: {DEFAULT_MIN_SEGMENT['attn_only']} "
                                                   f"attention-only, {DEFAULT_MIN_SEGMENT['mlp']} with --mlp)")
    add_options(g, ToyDataConfig, {"max_segment": DATA["max_segment"]})
    recipes = "; ".join(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items()) for kind, fields in DATA_RECIPES.items())
    g.add_argument("--data", choices=DATA_STREAMS,
                   help="training stream: repeated (random segments, the default), fewshot (few-shot sequences of "
                        "the lookup, rule and classification tasks, see `induction fewshot`), mixture (half each), "
                        "prior (the rule held fixed as a learned prior, mixed with sequences that override it in "
                        "context: `induction fewshot --task prior`) or tasks (several fixed functions over one "
                        "vocabulary, one per sequence: task inference, `--function-vectors`). prior and tasks change "
                        f"these defaults (options given still win): {recipes}")
    g = p.add_argument_group("interventions during training (Singh et al. 2024)")
    g.add_argument("--intervene", metavar="L0H2=zero,...",
                   help="heads to intervene on at every training step: LAYERHHEAD=KIND, comma-separated; KIND: "
                        "zero (the head's output hook_z set to 0), mean (hook_z set to its batch mean per position), "
                        "frozen (its Q/K/V/O weights held at their initial values); recorded in the run")
    g.add_argument("--intervene-steps", metavar="START:END",
                   help="the updates intervened on: START <= step < END; either side may be left empty "
                        "(default: every step)")
    g = p.add_argument_group("resuming")
    g.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    add_device_arguments(p)
    p.set_defaults(func=run)


def _flat(cfg) -> dict:
    """A TrainConfig's fields by their flat names (as `TrainConfig.from_flat` takes them)."""
    from dataclasses import asdict

    return {**asdict(cfg.model), **asdict(cfg.optim), **asdict(cfg.schedule), "seed": cfg.seed}


def config_from_args(args: argparse.Namespace, saved: dict | None = None):
    """The TrainConfig the options ask for, with the interventions of --intervene; with `saved` (a
    resumed run) unset options take its values."""
    from dataclasses import replace

    cfg = _base_config(args, saved)
    spec, window = getattr(args, "intervene", None), getattr(args, "intervene_steps", None)
    if window and not spec:
        raise CLIError("induction train: error: --intervene-steps needs --intervene (the heads to intervene on)")
    if not spec:
        return cfg
    from induction.training.interventions import parse_interventions

    try:
        wanted = replace(cfg, interventions=parse_interventions(spec, window))
    except ValueError as exc:
        raise CLIError("induction train: error: " + _flag_message(str(exc))) from None
    if saved is not None and wanted.interventions != cfg.interventions:
        raise CLIError("induction: error: --resume: the run was trained with different interventions "
                       "(leave --intervene out to use the run's own)")
    return wanted


def _flag_message(message: str) -> str:
    """A TrainConfig.interventions error in terms of the options that set the field."""
    import re

    message = re.sub(r"^interventions(\[\d+\])?: the step window", "--intervene-steps", message)
    message = re.sub(r"^interventions(\[\d+\])?: (start|end) ", r"--intervene-steps: \2 ", message)
    message = message.replace("(steps = ", "(--steps ")
    return re.sub(r"^interventions(\[\d+\])?", "--intervene", message)


def _base_config(args: argparse.Namespace, saved: dict | None = None):
    """The TrainConfig of every option but the interventions."""
    from induction.cli import given as given_options
    from induction.inputs.repeated import ToyDataConfig
    from induction.inputs.streams import data_config_from_dict, training_data
    from induction.training.config import TrainConfig

    flags = {**MODEL, "d_mlp": "--d-mlp", "attn_only": "--attn-only", **OPTIM, "lr": "--lr", **SCHEDULE,
             "warmup_steps": "--warmup-steps"}
    given = given_options(args, flags)
    # --seed is a common option with default 0, so "not given" and "0" look alike: when resuming, 0
    # means "the run's seed" and any other value must match it.
    if saved is None or args.seed != 0:
        given["seed"] = args.seed
    data_given = given_options(args, DATA)
    if saved is not None:
        run_cfg = TrainConfig.from_dict(saved)
        flat, data = _flat(run_cfg), run_cfg.data.to_dict()
        conflicts = sorted(k for k, v in given.items() if flat.get(k) != v)
        conflicts += sorted(k for k, v in data_given.items() if data.get(k) != v)
        if getattr(args, "data", None) and data.get("stream", "repeated") != args.data:
            conflicts.append("data")
        if conflicts:
            raise CLIError(f"induction: error: --resume: the run was trained with different {', '.join(conflicts)} "
                           "(leave those options out to use the run's own values)")
        return run_cfg
    base = TrainConfig.from_flat(**given)
    kind = getattr(args, "data", None)
    if kind in ("fewshot", "mixture", "prior", "tasks"):
        recipe = TrainConfig.for_data(kind, **given)
        if data_given and kind == "tasks":
            raise CLIError("induction train: error: --min-segment/--max-segment set the repeated-segment stream, "
                           "which --data tasks does not use")
        if not data_given:
            return recipe
        data = training_data(kind, recipe.model.d_vocab, recipe.model.n_ctx).to_dict()
        return TrainConfig.from_flat(**{k: v for k, v in _flat(recipe).items() if k != "seed"}, seed=recipe.seed,
                                     data=data_config_from_dict({**data, **data_given}))
    if data_given:
        data = {**base.data.to_dict(), **data_given}
        if "max_segment" not in data_given and data["max_segment"] is not None:
            data["max_segment"] = max(data["max_segment"], data["min_segment"])
        return TrainConfig.from_flat(**given, data=ToyDataConfig.from_dict(data))
    return base


def run(args: argparse.Namespace) -> int:
    import sys

    from induction.jobs import train
    from induction.loading.runs import is_run_dir, read_manifest
    from induction.reports.base import format_report

    if not args.out:
        raise CLIError("induction train: error: --out DIR is required (the run directory to write)")
    out = Path(args.out)
    if not out.parent.exists():
        raise CLIError(f"induction: error: --out {args.out}: directory {out.parent} does not exist")
    # A run that never saved a checkpoint has nothing to continue: its options are not binding.
    manifest = read_manifest(out) if args.resume and is_run_dir(out) else {}
    saved = manifest.get("train_config") if manifest.get("checkpoints") else None
    cfg = config_from_args(args, saved)
    report = train(out, cfg, resume=args.resume, device=args.device, dtype=args.dtype, progress=not args.quiet)
    sys.stdout.write(format_report(report, args.format, columns=args.columns))
    return 0
