"""`induction fewshot MODEL`: few-shot accuracy by number of demonstrations, per label variant.

``--labels`` takes one variant or a comma-separated list (``gold,flipped,random``): every variant is
evaluated on the same gold prompts and becomes one line of the ``--plot`` figure. ``--ablate N``
also ablates the N heads with the highest prefix-matching scores and compares with layer-matched
random head sets (`induction.fewshot.ablate_fewshot_heads`).
"""

from __future__ import annotations

import argparse
import time

from induction.cli import CLIError, add_model_arguments, check_out_path, check_plot_path, emit, load_model_from_args, save_plot


def _names(allowed: tuple[str, ...], what: str):
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {what} given")
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; choose from {', '.join(allowed)}")
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"{what} repeated in {text!r}")
        return names

    return parse


def _task(text: str) -> str:
    from induction.tasks import TASKS

    if text not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose one of {', '.join(TASKS)}")
    return text


def _shots(text: str) -> list[int]:
    try:
        shots = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots takes comma-separated integers, got {text!r}") from None
    if not shots or min(shots) < 0:
        raise argparse.ArgumentTypeError(f"--shots takes integers >= 0, got {text!r}")
    return sorted(set(shots))


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.fewshot import LABEL_VARIANTS
    from induction.tasks import TASKS

    p = sub.add_parser(
        "fewshot", parents=[common], help="few-shot accuracy by number of demonstrations",
        description="Score a model on few-shot prompts (k demonstrations, then a query) for each k and label "
                    "variant. Token-level tasks (lookup, rule, classification) suit any model; text tasks "
                    "(antonyms, country_capital, word_category) need a tokenizer. 'accuracy' is agreement with "
                    "the answer the demonstrations imply, 'accuracy_gold' with the task's gold label.",
    )
    add_model_arguments(p)
    p.add_argument("--task", type=_task, default="lookup", metavar="NAME",
                   help=f"one of {', '.join(TASKS)} (default: lookup)")
    p.add_argument("--labels", type=_names(LABEL_VARIANTS, "label variant"), default=["gold"], metavar="L[,L...]",
                   help=f"label variant(s), comma-separated, one plot line each: {', '.join(LABEL_VARIANTS)} (default: gold)")
    p.add_argument("--shots", type=_shots, default=[0, 1, 2, 4, 8], metavar="K[,K...]",
                   help="numbers of demonstrations (default: 0,1,2,4,8)")
    p.add_argument("--prompts", type=int, default=200, help="prompts per (labels, k) point (default: 200)")
    p.add_argument("--orders", type=int, default=1,
                   help="also score each prompt with its demonstrations in ORDERS-1 random orders (default: 1)")
    p.add_argument("--query-not-in-context", action="store_true",
                   help="rule/classification: do not force the query's input/class into the demonstrations")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per forward pass (default: 32)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs (0: none; default: 1000)")
    g = p.add_argument_group("which heads carry it")
    g.add_argument("--ablate", type=int, default=0, metavar="N",
                   help="ablate the N top prefix-matching heads and compare with layer-matched random heads (default: 0, off)")
    g.add_argument("--ablate-shots", type=int, metavar="K", help="k of the ablation prompts (default: the largest --shots)")
    g.add_argument("--ablate-draws", type=int, default=10, help="random head sets (default: 10)")
    g.add_argument("--ablate-method", choices=("zero", "mean", "resample"), default="zero",
                   help="ablation (default: zero)")
    p.add_argument("--plot", metavar="FILE", help="write accuracy vs k, one line per label variant (.html, .png, .svg, .pdf)")
    p.add_argument("--plot-kind", choices=("shots", "ablation"), default="shots",
                   help="shots (default) or ablation (needs --ablate)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_out_path(args)
    check_plot_path(args)
    for name in ("prompts", "orders", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"induction fewshot: error: --{name.replace('_', '-')} must be >= 1")
    if args.ablate < 0 or args.ablate_draws < 1:
        raise CLIError("induction fewshot: error: --ablate must be >= 0 and --ablate-draws >= 1")
    if args.plot_kind == "ablation" and args.plot and not args.ablate:
        raise CLIError("induction fewshot: error: --plot-kind ablation needs --ablate N")
    start = time.perf_counter()
    model = load_model_from_args(args)
    report = fewshot_model(model, args, start)
    emit(report, args)
    save_plot(lambda: report.plot(kind=args.plot_kind), args)
    return 0


def fewshot_model(model, args: argparse.Namespace, start: float):
    import torch

    from induction.fewshot import fewshot_report
    from induction.models import model_info
    from induction.report import provenance

    torch.manual_seed(args.seed)
    info = model_info(model)

    def prov(settings, _runtime):
        return provenance(info.spec, info.checkpoint, args.seed, settings, time.perf_counter() - start)

    return fewshot_report(
        model, task=args.task, labels=args.labels, shots=args.shots, ablate=args.ablate,
        ablate_shots=args.ablate_shots, ablate_draws=args.ablate_draws, ablate_method=args.ablate_method,
        provenance_fn=prov, n_prompts=args.prompts, seed=args.seed, query_in_context=not args.query_not_in_context,
        n_orders=args.orders, batch_size=args.batch_size, n_bootstrap=args.bootstrap, progress=not args.quiet,
    )
