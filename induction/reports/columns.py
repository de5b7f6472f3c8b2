"""Table columns: each report's full column list, the ones shown by default, short headers and their legend.

A terminal table must fit 100 columns without cutting a header, so it shows the columns that matter
(`DEFAULT_COLUMNS`) under short headers (`HEADERS`), with a legend line explaining every short header
used. JSON and CSV keep every field under its full name; `format_report(..., columns="all")` (the
CLI's ``--columns all``) shows every column. This module imports nothing, so the command line can
check ``--columns`` names before any heavy import (`induction.cli.static`).
"""

from __future__ import annotations

SCAN = ("layer", "head", "prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token",
        "is_induction", "induction_offset", "offset_prefix_matching", "offset_copying", "is_shifted_induction")
TRACK = ("step", "tokens_seen", "loss", "held_out_loss", "icl_score", "best_head", "best_prefix_matching",
         "best_copying", "n_induction_heads")
TRACK_ABLATION = ("joint_effect", "sum_single", "control", "share")
TRACK_PATHS = ("q_paths", "k_paths", "v_paths")
SWEEP_TRACK = ("run", "step", "best_prefix_matching", "best_copying", "icl_score", "held_out_loss", "n_induction_heads")
SWEEP_SCAN = ("run", "icl_score", "best_head", "best_prefix_matching", "best_copying", "n_induction_heads")
FEWSHOT = ("labels", "k", "accuracy", "ci_low", "ci_high", "accuracy_gold", "mean_logprob", "mean_logprob_gold",
           "n_prompts")
FEWSHOT_TASKS = ("task_probs",)
EFFECTS = ("layer", "head", "value", "effect")
EFFECT_DETAILS = ("grad_drop",)
BENCH = ("model", "method", "truth", "n_true", "n_named", "precision", "recall", "true_head_rank", "spearman_vs_exact",
         "runtime_s")
TRAIN = ("step", "tokens_seen", "loss", "path")

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    # copying_ov (the weight-based copying estimate) and offset_copying stay in JSON/CSV and --columns all.
    "scan": ("layer", "head", "prefix_matching", "copying", "previous_token", "duplicate_token", "is_induction",
             "induction_offset", "offset_prefix_matching", "is_shifted_induction"),
    # The training loss and tokens seen are in JSON/CSV; the held-out loss is the one to compare.
    "track": ("step", "held_out_loss", "icl_score", "best_head", "best_prefix_matching", "best_copying",
              "n_induction_heads", "joint_effect", "control", "share"),
    "sweep": ("run", "step", "icl_score", "best_head", "best_prefix_matching", "best_copying", "held_out_loss",
              "n_induction_heads", "joint_effect", "share"),
    "fewshot": ("labels", "k", "accuracy", "ci_low", "ci_high", "accuracy_gold", "mean_logprob", "n_prompts",
                "task_probs"),
    "ablate": EFFECTS,
    "patch": EFFECTS + EFFECT_DETAILS,
    "bench": ("model", "method", "truth", "n_true", "n_named", "precision", "recall", "true_head_rank"),
    "train": TRAIN,
}
"""Per subcommand, the columns a terminal table shows unless told otherwise (those a report lacks are skipped)."""

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "scan": SCAN, "track": TRACK + TRACK_ABLATION + TRACK_PATHS,
    "sweep": tuple(dict.fromkeys(SWEEP_TRACK + SWEEP_SCAN + TRACK_ABLATION)),
    "fewshot": FEWSHOT + FEWSHOT_TASKS, "ablate": EFFECTS, "patch": EFFECTS + EFFECT_DETAILS, "bench": BENCH, "train": TRAIN,
}
"""Per subcommand, every column its report can have (what ``columns=`` may name)."""

HEADERS: dict[str, str] = {
    "prefix_matching": "prefix", "copying": "copy", "copying_ov": "copy_ov", "previous_token": "prev",
    "duplicate_token": "dup", "is_induction": "ind", "induction_offset": "d", "offset_prefix_matching": "prefix@d",
    "offset_copying": "copy@d", "is_shifted_induction": "shifted", "tokens_seen": "tokens", "held_out_loss": "held_out",
    "icl_score": "icl", "best_head": "best", "best_prefix_matching": "prefix", "best_copying": "copy",
    "n_induction_heads": "n_ind", "joint_effect": "joint", "sum_single": "sum_1", "accuracy": "acc",
    "ci_low": "ci_lo", "ci_high": "ci_hi", "accuracy_gold": "acc_gold", "mean_logprob": "logp",
    "mean_logprob_gold": "logp_gold", "n_prompts": "n", "task_probs": "p(task)", "n_true": "true",
    "n_named": "named", "true_head_rank": "rank", "spearman_vs_exact": "rho_exact", "runtime_s": "time_s",
    "grad_drop": "graddrop",
}
"""Full column name -> the short header a terminal table shows."""

MEANINGS: dict[str, str] = {
    "prefix_matching": "prefix-matching score (attention to the token after an earlier occurrence)",
    "copying": "copying score (the head's output raises the logits of the tokens it attends to)",
    "copying_ov": "copying from the weights, sum(eig)/sum(|eig|) of W_U W_OV W_E",
    "previous_token": "previous-token score", "duplicate_token": "duplicate-token score",
    "is_induction": "an induction head (prefix and copy above their thresholds)",
    "induction_offset": "induction offset: the head attends d tokens after earlier occurrences (1 = canonical)",
    "offset_prefix_matching": "attention at offset d", "offset_copying": "copying at offset d",
    "is_shifted_induction": "a shifted induction head (d >= 2)", "tokens_seen": "training tokens seen",
    "held_out_loss": "loss on held-out sequences", "icl_score": "ICL score (late-token minus early-token loss)",
    "best_head": "the head with the highest prefix-matching score",
    "best_prefix_matching": "that head's prefix-matching score", "best_copying": "that head's copying score",
    "n_induction_heads": "number of induction heads",
    "joint_effect": "ICL-score change with the final induction heads ablated together",
    "sum_single": "their single-head ablation effects summed",
    "control": "mean effect of layer-matched random head sets", "share": "joint effect / ICL score",
    "accuracy": "accuracy against the labels shown in context", "ci_low": "95% CI lower bound",
    "ci_high": "95% CI upper bound", "accuracy_gold": "accuracy against the true mapping",
    "mean_logprob": "mean log-probability of the answer", "mean_logprob_gold": "mean log-probability of the gold answer",
    "n_prompts": "prompts", "task_probs": "probability of each task's answer",
    "n_true": "true heads", "n_named": "heads the method names", "true_head_rank": "rank of the true heads",
    "spearman_vs_exact": "Spearman correlation of the method's head scores with exact patching",
    "runtime_s": "seconds the method took", "grad_drop": "AtP*'s GradDrop magnitude",
    "q_paths": "summed effect of the query paths into the final induction heads",
    "k_paths": "summed effect of the key paths into the final induction heads",
    "v_paths": "summed effect of the value paths into the final induction heads",
}
"""Full column name -> what it means (the legend under a table, for every short header it shows)."""

PLAIN = frozenset({"layer", "head", "step", "loss", "run", "model", "method", "truth", "labels", "k", "value",
                   "effect", "precision", "recall", "path"})
"""Headers that explain themselves (no legend entry needed)."""


def header(column: str) -> str:
    """The short header of `column` (the name itself when it has none)."""
    return HEADERS.get(column, column)


def legend(columns: tuple[str, ...] | list[str]) -> str:
    """One line explaining every shown header that is not self-explanatory, e.g. "prefix: prefix-matching score ..."."""
    parts = [f"{header(c)}: {MEANINGS[c]}" for c in columns if c not in PLAIN and c in MEANINGS]
    return "; ".join(parts)


def resolve(names: tuple[str, ...] | list[str], available: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Full column names for `names` (full names or short headers) among `available`.

    Raises:
        ValueError: a name that is neither a column of `available` nor one's short header.
    """
    by_header: dict[str, str] = {}
    for c in available:
        by_header.setdefault(header(c), c)
    out = []
    for name in names:
        column = name if name in available else by_header.get(name)
        if column is None:
            raise ValueError(f"columns: unknown column {name!r}; choose from all, {', '.join(available)}")
        out.append(column)
    return tuple(dict.fromkeys(out))
