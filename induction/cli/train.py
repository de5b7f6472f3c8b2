"""`induction train --out DIR`: train a toy model on the synthetic stream, with checkpoints.

Here --out names the run directory (CONTRACT), not a report file; the report (the run's checkpoints)
goes to stdout. With --resume an interrupted run continues from its last checkpoint; options not
given then take the run's saved values, and options given must agree with them (--seed 0, the
default, stands for the run's own seed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from induction.cli import CLIError

# argparse dest -> TrainConfig field, for the options that map one to one.
_FIELDS = {
    "layers": "n_layers", "d_model": "d_model", "heads": "n_heads", "ctx": "n_ctx", "vocab": "d_vocab",
    "attn_only": "attn_only", "d_mlp": "d_mlp", "steps": "steps", "batch_size": "batch_size", "lr": "lr",
    "warmup_steps": "warmup_steps", "weight_decay": "weight_decay",
    "log_checkpoints": "n_log_checkpoints", "checkpoint_every": "checkpoint_every",
}
_DATA_FIELDS = ("min_segment", "max_segment")


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a toy model with checkpoints (a run directory)",
        description="Train a small TL-native transformer on random segments of random length tiled to the "
                    "context, saving checkpoints (log-spaced, every N steps, final) to a run directory that "
                    "`induction scan/track` read. Defaults: the 2-layer attention-only model that forms "
                    "induction heads in a few hundred steps. Here --out DIR (required) is the run directory; "
                    "the report goes to stdout.",
    )
    g = p.add_argument_group("model")
    g.add_argument("--layers", type=int, help="transformer blocks (default: 2; 1 cannot form induction heads)")
    g.add_argument("--d-model", type=int, help="residual width (default: 64)")
    g.add_argument("--heads", type=int, help="heads per layer (default: 4)")
    g.add_argument("--ctx", type=int, help="context length (default: 128)")
    g.add_argument("--vocab", type=int, help="vocabulary size, BOS included (default: 128)")
    kind = g.add_mutually_exclusive_group()
    kind.add_argument("--attn-only", dest="attn_only", action="store_const", const=True,
                      help="attention-only, no LayerNorm (default)")
    kind.add_argument("--mlp", dest="attn_only", action="store_const", const=False,
                      help="GPT-2 style: LayerNorm and an MLP in every block (lr 3e-3, 400 warm-up steps by default)")
    g.add_argument("--d-mlp", type=int, help="MLP width with --mlp (default: 4 * d_model)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="optimizer steps (default: 1000)")
    g.add_argument("--batch-size", type=int, help="sequences per step (default: 16)")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 1e-2 attention-only, 3e-3 with --mlp)")
    g.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 0 attention-only, 400 with --mlp)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0)")
    g = p.add_argument_group("checkpoints and data")
    g.add_argument("--log-checkpoints", type=int, help="log-spaced checkpoints (default: 24)")
    g.add_argument("--checkpoint-every", type=int, help="also a checkpoint every N steps, 0: off (default: 50)")
    g.add_argument("--min-segment", type=int, help="shortest repeated segment (default: 4)")
    g.add_argument("--max-segment", type=int, help="longest repeated segment (default: (ctx - 1) // 2, at most vocab - 1)")
    g.add_argument("--data", choices=("repeated", "fewshot", "mixture"),
                   help="training stream: repeated (random segments, the default), fewshot (few-shot sequences of "
                        "the lookup, rule and classification tasks, see `induction fewshot`) or mixture (half each)")
    g.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, saved: dict | None = None):
    """The TrainConfig the options ask for; with `saved` (a resumed run) unset options take its values."""
    from induction.data import ToyDataConfig
    from induction.train import TrainConfig

    given = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest) is not None}
    # --seed is a common option with default 0, so "not given" and "0" look alike: when resuming, 0
    # means "the run's seed" and any other value must match it.
    if saved is None or args.seed != 0:
        given["seed"] = args.seed
    data_given = {name: getattr(args, name) for name in _DATA_FIELDS if getattr(args, name) is not None}
    if saved is not None:
        conflicts = sorted(k for k, v in given.items() if saved.get(k) != v)
        conflicts += sorted(k for k, v in data_given.items() if (saved.get("data") or {}).get(k) != v)
        if getattr(args, "data", None) and (saved.get("data") or {}).get("stream", "repeated") != args.data:
            conflicts.append("data")
        if conflicts:
            raise CLIError(f"induction: error: --resume: the run was trained with different {', '.join(conflicts)} "
                           "(leave those options out to use the run's own values)")
        return TrainConfig.from_dict(saved)
    base = TrainConfig(**given)
    if getattr(args, "data", None) in ("fewshot", "mixture"):
        from induction.tasks import data_config_from_dict, training_data

        data = training_data(args.data, base.d_vocab, base.n_ctx).to_dict()
        given["data"] = data_config_from_dict({**data, **data_given})
        return TrainConfig(**given)
    if data_given:
        data = {**base.data.to_dict(), **data_given}
        if "max_segment" not in data_given and data["max_segment"] is not None:
            data["max_segment"] = max(data["max_segment"], data["min_segment"])
        given["data"] = ToyDataConfig.from_dict(data)
        return TrainConfig(**given)
    return base


def run(args: argparse.Namespace) -> int:
    import sys

    from induction.models import MANIFEST_FILE, read_manifest
    from induction.report import format_report, provenance
    from induction.train import train, train_report

    if not args.out:
        raise CLIError("induction train: error: --out DIR is required (the run directory to write)")
    out = Path(args.out)
    if not out.parent.exists():
        raise CLIError(f"induction: error: --out {args.out}: directory {out.parent} does not exist")
    saved = None
    if args.resume and (out / MANIFEST_FILE).exists():
        saved = read_manifest(out).get("train_config")
    cfg = config_from_args(args, saved)
    start = time.perf_counter()
    train(cfg, out, resume=args.resume, progress=not args.quiet)
    prov = lambda settings, runtime: provenance(str(out), None, cfg.seed, settings, runtime)  # noqa: E731
    report = train_report(out, prov, time.perf_counter() - start)
    sys.stdout.write(format_report(report, args.format))
    return 0
