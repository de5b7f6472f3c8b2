"""Few-shot prompts: label manipulations, accuracy by number of shots, and the heads that carry it.

Pipeline: a task (`induction.tasks`) samples gold `Episode`s; `labels.manipulate` changes their
labels (`LABEL_VARIANTS`); `render` turns them into tokens (`FewShotPrompts`); `evaluate` scores a
model (accuracy vs the in-context and the gold answer, by k); `ablation` asks which heads carry
the accuracy. `induction.jobs.fewshot` runs them into a `FewShotReport`.
"""

from induction.fewshot.ablation import FewShotAblation, ablate_fewshot_heads
from induction.fewshot.evaluate import (
    PromptScores,
    ShotResult,
    correct_and_logprob,
    corrupt_labels,
    evaluate_fewshot,
    evaluate_shots,
    fewshot_metric,
    fewshot_metric_setup,
    fewshot_per_prompt,
    run_prompts,
    score_logits,
)
from induction.fewshot.labels import LABEL_VARIANTS, manipulate, shuffle_demos
from induction.fewshot.render import (
    FewShotPromptConfig,
    FewShotPrompts,
    build_prompts,
    render,
    sample_episodes,
    task_for_model,
    text_prompt,
    toy_data_config,
)

__all__ = [
    "LABEL_VARIANTS",
    "FewShotAblation",
    "FewShotPromptConfig",
    "FewShotPrompts",
    "PromptScores",
    "ShotResult",
    "ablate_fewshot_heads",
    "build_prompts",
    "correct_and_logprob",
    "corrupt_labels",
    "evaluate_fewshot",
    "evaluate_shots",
    "fewshot_metric",
    "fewshot_metric_setup",
    "fewshot_per_prompt",
    "manipulate",
    "render",
    "run_prompts",
    "sample_episodes",
    "score_logits",
    "shuffle_demos",
    "task_for_model",
    "text_prompt",
    "toy_data_config",
]
