"""Which metric a causal effect is measured on, and on which run (`MetricSpec`).

The model's own token stream with the ICL score or the repeat loss, or few-shot prompts with the
answer's log-probability (`induction.measures.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformer_lens.model_bridge import TransformerBridge

from induction.common.checks import check_choice, check_min
from induction.measures.fewshot.evaluate import fewshot_metric_setup
from induction.measures.metrics import METRICS, MetricSetup, stream_metric_setup


@dataclass
class MetricSpec:
    """Which metric, on which run.

    Attributes:
        name: ``icl`` (the ICL score), ``repeat-loss``, or ``fewshot`` (log-probability of the
            in-context answer; `induction.measures.metrics`).
        sequences: sequences (or few-shot prompts) the metric is measured on (32).
        seq_len: sequence length for ``icl`` / ``repeat-loss`` (None: the model's context, at most 512).
        task: the few-shot task for ``fewshot`` (lookup).
        shots: demonstrations per prompt for ``fewshot`` (4).
        seed: seeds the sequences or prompts.
    """

    name: str = "icl"
    sequences: int = 32
    seq_len: int | None = None
    task: str = "lookup"
    shots: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("metric", self.name, METRICS)
        check_min("sequences", self.sequences, 1)

    def setup(self, model: TransformerBridge) -> MetricSetup:
        if self.name == "fewshot":
            return fewshot_metric_setup(model, task=self.task, shots=self.shots, n_prompts=self.sequences, seed=self.seed)
        return stream_metric_setup(model, self.name, n_sequences=self.sequences, seed=self.seed, seq_len=self.seq_len)
