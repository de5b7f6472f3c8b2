"""`induction fewshot MODEL`: few-shot accuracy by number of demonstrations, per label variant.

``--labels`` takes one variant or a comma-separated list (``gold,flipped,random``): every variant is
evaluated on the same gold prompts and becomes one line of the ``--plot`` figure. ``--ablate N``
also ablates the N heads with the highest prefix-matching scores and compares with layer-matched
random head sets; ``--attribute N`` ablates every head alone under each label variant, then the N
that matter most for following the demonstrations together vs layer-matched random sets
(`induction.measures.fewshot.ablation`). ``--function-vectors`` adds Todd et al.'s function vectors for
every task of a tasks-stream model (else for ``--task``; `induction.measures.fewshot.vectors`).
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
    static,
)


def _options() -> tuple[dict, dict]:
    tasks = static.constant("induction.inputs.tasks:TASKS")
    methods = static.constant("induction.measures.effects:ABLATION_METHODS")
    labels = static.constant("induction.measures.fewshot.labels:LABEL_VARIANTS")
    return {
        "task": ("--task", {"type": one_of("task", tasks), "metavar": "NAME"}),
        "labels": ("--labels", {"type": comma_list("label variant", labels), "metavar": "L[,L...]"}),
        "shots": ("--shots", {"type": comma_list("--shots", item=int, minimum=0, sort=True), "metavar": "K[,K...]"}),
        "n_prompts": "--prompts", "orders": "--orders", "batch_size": "--batch-size", "n_bootstrap": "--bootstrap",
    }, {
        "ablate_top_k": ("--ablate", {"metavar": "N"}), "ablate_shots": ("--ablate-shots", {"metavar": "K"}),
        "ablate_draws": "--ablate-draws", "ablate_method": ("--ablate-method", {"choices": methods}),
        "attribute": ("--attribute", {"metavar": "N"}),
    }


VECTOR_FLAGS = {"k": ("--fv-shots", {"metavar": "K"}), "n_prompts": "--fv-prompts", "n_heads": "--fv-heads",
                "n_filler": "--fv-filler"}
PLOT_KINDS = {"shots": None, "tasks": None, "ablation": ("ablating", "--ablate N"),
              "attribution": ("attribute", "--attribute N"), "vectors": ("function_vectors", "--function-vectors")}


FEWSHOT_CONFIG = "induction.jobs:FewShotConfig"
VECTOR_CONFIG = "induction.measures.fewshot.vectors:FunctionVectorConfig"


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fewshot", parents=[common], help="few-shot accuracy by number of demonstrations",
        description="Score a model on few-shot prompts (k demonstrations, then a query) for each k and label "
                    "variant. Token-level tasks (lookup, rule, classification, prior) suit any model; a model "
                    "trained with `induction train --data tasks` has its own (succ, pred, perm, ...); text tasks "
                    "(antonyms, country_capital, word_category) need a tokenizer. 'accuracy' is agreement with "
                    "the answer the demonstrations imply, 'accuracy_gold' with the task's gold label (for "
                    "--task prior: the prior).",
    )
    add_model_arguments(p)
    prompts, ablation = _options()
    add_options(p, FEWSHOT_CONFIG, prompts)
    query = p.add_mutually_exclusive_group()
    query.add_argument("--query-in-context", dest="query_in_context", action="store_const", const=True,
                       help="show the query's input (class) in a demonstration (default for rule, prior, classification)")
    query.add_argument("--query-not-in-context", dest="query_in_context", action="store_const", const=False,
                       help="never show it (default for the tasks-stream tasks)")
    add_options(p.add_argument_group("which heads carry it"), FEWSHOT_CONFIG, ablation)
    g = p.add_argument_group("function vectors (Todd et al. 2024)")
    g.add_argument("--function-vectors", action="store_true",
                   help="per task: each head's indirect effect, the function vector of the top heads, and zero-shot "
                        "accuracy with and without it (every task of a tasks-stream model)")
    add_options(g, VECTOR_CONFIG, VECTOR_FLAGS)
    p.add_argument("--plot", metavar="FILE", help="write a figure (.html, .png, .svg, .pdf); --plot-kind says which")
    p.add_argument("--plot-kind", choices=tuple(PLOT_KINDS), default="shots",
                   help="shots (default: accuracy vs k per label variant), tasks (probability of each task's answer "
                        "vs k), ablation, attribution or vectors (each needs its option)")
    p.set_defaults(func=run)


def fewshot_config_from_args(args: argparse.Namespace):
    from induction.cli import given
    from induction.jobs import FewShotConfig
    from induction.measures.fewshot.vectors import FunctionVectorConfig

    if given(args, VECTOR_FLAGS) and not args.function_vectors:
        raise CLIError("induction fewshot: error: the --fv-* options need --function-vectors")
    vectors = config_from(FunctionVectorConfig, args, VECTOR_FLAGS) if args.function_vectors else None
    prompts, ablation = _options()
    return config_from(FewShotConfig, args, {**prompts, **ablation}, query_in_context=args.query_in_context,
                       function_vectors=vectors, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from induction.jobs import fewshot

    cfg = fewshot_config_from_args(args)
    needs = PLOT_KINDS[args.plot_kind]
    if args.plot and needs is not None and not getattr(cfg, needs[0]):
        raise CLIError(f"induction fewshot: error: --plot-kind {args.plot_kind} needs {needs[1]}")
    return run_job(args, fewshot, model_ref(args), cfg, lambda report: report.plot(kind=args.plot_kind))
