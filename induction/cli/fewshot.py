"""`induction fewshot MODEL`: few-shot accuracy by number of demonstrations, per label variant.

``--labels`` takes one variant or a comma-separated list (``gold,flipped,random``): every variant is
evaluated on the same gold prompts and becomes one line of the ``--plot`` figure. ``--ablate N``
also ablates the N heads with the highest prefix-matching scores and compares with layer-matched
random head sets (`induction.fewshot.ablation`).
"""

from __future__ import annotations

import argparse

from induction.cli import (
    CLIError,
    add_model_arguments,
    add_options,
    comma_list,
    config_from,
    model_ref,
    one_of,
    run_job,
)


def _options() -> tuple[dict, dict]:
    from induction.effects import ABLATION_METHODS
    from induction.fewshot.labels import LABEL_VARIANTS
    from induction.tasks import TASKS

    return {
        "task": ("--task", {"type": one_of("task", TASKS), "metavar": "NAME"}),
        "labels": ("--labels", {"type": comma_list("label variant", LABEL_VARIANTS), "metavar": "L[,L...]"}),
        "shots": ("--shots", {"type": comma_list("--shots", item=int, minimum=0, sort=True), "metavar": "K[,K...]"}),
        "n_prompts": "--prompts", "orders": "--orders", "batch_size": "--batch-size", "n_bootstrap": "--bootstrap",
    }, {
        "ablate": ("--ablate", {"metavar": "N"}), "ablate_shots": ("--ablate-shots", {"metavar": "K"}),
        "ablate_draws": "--ablate-draws", "ablate_method": ("--ablate-method", {"choices": ABLATION_METHODS}),
    }


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from induction.jobs import FewShotConfig

    p = sub.add_parser(
        "fewshot", parents=[common], help="few-shot accuracy by number of demonstrations",
        description="Score a model on few-shot prompts (k demonstrations, then a query) for each k and label "
                    "variant. Token-level tasks (lookup, rule, classification) suit any model; text tasks "
                    "(antonyms, country_capital, word_category) need a tokenizer. 'accuracy' is agreement with "
                    "the answer the demonstrations imply, 'accuracy_gold' with the task's gold label.",
    )
    add_model_arguments(p)
    prompts, ablation = _options()
    add_options(p, FewShotConfig, prompts)
    p.add_argument("--query-not-in-context", action="store_true",
                   help="rule/classification: do not force the query's input/class into the demonstrations")
    add_options(p.add_argument_group("which heads carry it"), FewShotConfig, ablation)
    p.add_argument("--plot", metavar="FILE", help="write accuracy vs k, one line per label variant (.html, .png, .svg, .pdf)")
    p.add_argument("--plot-kind", choices=("shots", "ablation"), default="shots",
                   help="shots (default) or ablation (needs --ablate)")
    p.set_defaults(func=run)


def fewshot_config_from_args(args: argparse.Namespace):
    from induction.jobs import FewShotConfig

    prompts, ablation = _options()
    return config_from(FewShotConfig, args, {**prompts, **ablation}, query_in_context=not args.query_not_in_context,
                       seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import fewshot

    cfg = fewshot_config_from_args(args)
    if args.plot_kind == "ablation" and args.plot and not cfg.ablating:
        raise CLIError("induction fewshot: error: --plot-kind ablation needs --ablate N")
    return run_job(args, fewshot, model_ref(args), cfg, lambda report: report.plot(kind=args.plot_kind))
