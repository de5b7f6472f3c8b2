"""Few-shot prompts: label manipulations, accuracy by number of shots, the heads that carry it, and
function vectors.

Pipeline: a task (`induction.inputs.tasks`) samples gold `Episode`s; `labels.manipulate` changes their
labels (`LABEL_VARIANTS`); `render` turns them into tokens (`FewShotPrompts`); `evaluate` scores a
model (accuracy vs the in-context and the gold answer, by k; for a tasks-stream model, the
probability of each task's answer); `ablation` asks which heads carry the accuracy (a head set vs
layer-matched random sets; every head per label variant); `vectors` computes Todd et al.'s
function vectors. `induction.jobs.fewshot` runs them into a `FewShotReport`.
"""

from induction.measures.fewshot.ablation import (
    FewShotAblation,
    HeadAttribution,
    VariantAttribution,
    ablate_fewshot_heads,
    attribute_fewshot_heads,
)
from induction.measures.fewshot.evaluate import (
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
    task_probabilities,
)
from induction.measures.fewshot.labels import LABEL_VARIANTS, manipulate, shuffle_demos
from induction.measures.fewshot.render import (
    FewShotPromptConfig,
    FewShotPrompts,
    build_prompts,
    default_task,
    model_tasks,
    render,
    sample_episodes,
    task_for_model,
    text_prompt,
    toy_data_config,
)
from induction.measures.fewshot.vectors import (
    FunctionVectorConfig,
    FunctionVectors,
    TaskFunctionVector,
    ZeroShot,
    function_vectors,
)

__all__ = [
    "LABEL_VARIANTS",
    "FewShotAblation",
    "FunctionVectorConfig",
    "FunctionVectors",
    "HeadAttribution",
    "TaskFunctionVector",
    "VariantAttribution",
    "ZeroShot",
    "FewShotPromptConfig",
    "FewShotPrompts",
    "PromptScores",
    "ShotResult",
    "ablate_fewshot_heads",
    "attribute_fewshot_heads",
    "build_prompts",
    "correct_and_logprob",
    "corrupt_labels",
    "default_task",
    "evaluate_fewshot",
    "evaluate_shots",
    "fewshot_metric",
    "fewshot_metric_setup",
    "fewshot_per_prompt",
    "function_vectors",
    "manipulate",
    "model_tasks",
    "render",
    "run_prompts",
    "sample_episodes",
    "score_logits",
    "shuffle_demos",
    "task_probabilities",
    "task_for_model",
    "text_prompt",
    "toy_data_config",
]
