"""`induction ablate MODEL`: each head's effect on the ICL score when it is ablated."""

from __future__ import annotations

import argparse
import time

from induction.cli import add_model_arguments, check_out_path, check_plot_path, emit, load_model_from_args, save_plot


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.effects import ABLATION_METHODS

    p = sub.add_parser("ablate", parents=[common], help="each head's effect on ICL when ablated",
                       description="Ablate one head at a time and report the metric and its change. With --top-k, also "
                                   "ablate the top-k prefix-matching heads together and compare with layer-matched "
                                   "random head sets (Crosbie & Shutova 2024).")
    add_model_arguments(p)
    p.add_argument("--method", choices=ABLATION_METHODS, default="zero",
                   help="zero, mean (over the batch), resample (another prompt's output), or pattern "
                        "(Olsson et al.'s pattern-preserving ablation) (default: zero)")
    add_metric_arguments(p)
    p.add_argument("--top-k", type=int, default=0, help="also ablate the k strongest prefix-matching heads together")
    p.add_argument("--draws", type=int, default=10, help="layer-matched random sets for --top-k (default: 10)")
    p.add_argument("--plot", metavar="FILE", help="write the layer x head effect heatmap")
    p.set_defaults(func=run)


def add_metric_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default="icl", help="icl (ICL score), repeat-loss, or fewshot (default: icl)")
    p.add_argument("--sequences", type=int, default=32, help="sequences for the metric (default: 32)")
    p.add_argument("--seq-len", type=int, help="sequence length (default: the model's context)")
    p.add_argument("--task", default="lookup", help="few-shot task for --metric fewshot (default: lookup)")
    p.add_argument("--shots", type=int, default=4, help="demonstrations per prompt for --metric fewshot (default: 4)")


def metric_setup_from_args(model, args: argparse.Namespace):
    if args.metric == "fewshot":
        from induction.fewshot import fewshot_metric_setup

        return fewshot_metric_setup(model, task=args.task, shots=args.shots, n_prompts=args.sequences, seed=args.seed)
    from induction.effects import metric_setup

    return metric_setup(model, args.metric, n_sequences=args.sequences, seed=args.seed, seq_len=args.seq_len)


def run(args: argparse.Namespace) -> int:
    import torch

    from induction.effects import HeadEffectReport, ablation_effects, set_ablation_control
    from induction.models import model_info
    from induction.report import provenance

    check_out_path(args)
    check_plot_path(args)
    if args.top_k < 0 or args.draws < 1:
        raise ValueError("--top-k must be >= 0 and --draws >= 1")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = load_model_from_args(args)
    setup = metric_setup_from_args(model, args)
    baseline, values = ablation_effects(model, setup, args.method, seed=args.seed, progress=not args.quiet)
    control = None
    if args.top_k:
        from induction.scores import top_prefix_heads

        heads = sorted(top_prefix_heads(model, args.top_k, args.seed)[0])
        control = set_ablation_control(model, setup, heads, args.method, n_draws=args.draws, seed=args.seed,
                                       label=f"top-{args.top_k} prefix-matching heads")
    info = model_info(model)
    settings = {"metric": args.metric, "sequences": args.sequences, "data": setup.description, "method": args.method,
                "top_k": args.top_k, "draws": args.draws}
    report = HeadEffectReport(model=info.spec, command="ablate", method=args.method, metric=args.metric,
                              baseline=baseline, values=values, control=control,
                              provenance=provenance(info.spec, info.checkpoint, args.seed, settings, time.perf_counter() - start))
    emit(report, args)
    save_plot(report.plot, args)
    return 0
