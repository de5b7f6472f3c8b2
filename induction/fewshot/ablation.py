"""Which heads carry few-shot accuracy: the top prefix-matching heads ablated vs layer-matched random heads.

Crosbie & Shutova (2024) ablate the heads with the highest prefix-matching scores and compare with
as many random heads; here the random sets come from the same layers as the top set and every set
is ablated together on the same prompts (`induction.effects.head_set_ablation`), so accuracy and
log-probability get bootstrap intervals over prompts, and the difference a joint one over prompts
and draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from induction.effects import HeadSetAblation, HeadSetResult, head_set_ablation
from induction.fewshot.evaluate import correct_and_logprob
from induction.fewshot.render import FewShotPromptConfig, build_prompts
from induction.scores import ScoreConfig, score_heads, top_prefix_heads
from induction.stats import DEFAULT_RESAMPLES

QUANTITIES = ("accuracy", "mean_logprob")


@dataclass
class FewShotAblation:
    """Few-shot accuracy with a head set ablated vs layer-matched random head sets.

    Attributes:
        config: the prompts' settings.
        prefix_matching: the ablated heads' prefix-matching scores, in `ablation.target.heads` order.
        ablation: the head-set ablation; its quantities are ("accuracy", "mean_logprob") per prompt.
    """

    config: FewShotPromptConfig
    prefix_matching: list[float]
    ablation: HeadSetAblation

    def _result(self, result: HeadSetResult) -> dict[str, Any]:
        a = self.ablation
        acc_ci, lp_ci = a.ci(result, "accuracy"), a.ci(result, "mean_logprob")
        return {"heads": [list(h) for h in result.heads], "accuracy": result.mean(0),
                "accuracy_ci": None if acc_ci is None else list(acc_ci), "mean_logprob": result.mean(1),
                "mean_logprob_ci": None if lp_ci is None else list(lp_ci)}

    def to_dict(self) -> dict[str, Any]:
        a, cfg = self.ablation, self.config
        random_ci, diff_ci = a.random_ci("accuracy"), a.difference_ci("accuracy")
        return {
            "task": cfg.task, "labels": cfg.labels, "k": cfg.k, "n_prompts": cfg.n_prompts, "method": a.method,
            "top_heads": [list(h) for h in a.target.heads], "prefix_matching": self.prefix_matching,
            "baseline": self._result(a.baseline), "top": self._result(a.target),
            "random": [self._result(r) for r in a.random], "n_distinct_random_sets": a.n_distinct_random_sets,
            "random_accuracy": a.random_mean("accuracy"),
            "random_accuracy_ci": None if random_ci is None else list(random_ci),
            "random_mean_logprob": a.random_mean("mean_logprob"),
            "drop_difference": a.difference("accuracy"),
            "drop_difference_ci": None if diff_ci is None else list(diff_ci),
        }


def ablate_fewshot_heads(
    model: TransformerBridge,
    cfg: FewShotPromptConfig,
    n_heads: int | None = None,
    heads: Sequence[Head] | None = None,
    n_draws: int = 10,
    method: str = "zero",
    n_bootstrap: int = DEFAULT_RESAMPLES,
    progress: bool = False,
) -> FewShotAblation:
    """Few-shot accuracy with the top prefix-matching heads ablated vs layer-matched random heads.

    Args:
        cfg: the prompts (task, label variant, k, n_prompts, seed).
        n_heads: how many top heads (None: the number of detected induction heads, at least 1).
        heads: the set to ablate instead of the top prefix-matching heads.
        n_draws: random layer-matched sets.
        method: `circuits.METHODS`.
    """
    prompts = build_prompts(model, cfg)
    if heads is None:
        chosen, prefix = top_prefix_heads(model, n_heads, cfg.seed)
    else:
        chosen = [(int(layer), int(h)) for layer, h in heads]
        pm = score_heads(model, ScoreConfig(n_bootstrap=0)).prefix_matching
        prefix = [float(pm[layer, h]) for layer, h in chosen]
    ablation = head_set_ablation(model, prompts.tokens, correct_and_logprob(prompts), chosen, QUANTITIES, method,
                                 n_draws, cfg.seed, n_bootstrap, progress)
    return FewShotAblation(config=cfg, prefix_matching=prefix, ablation=ablation)
