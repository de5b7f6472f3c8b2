"""The method benchmark: every head-finding method scored against hand-built models whose heads are known.

The suite (`SUITE`) holds hand-built models (`induction.bench.handbuilt`), attention-only and LayerNorm +
MLP, at two sizes, each with a previous-token head, the offset heads of a shifted-induction circuit, a
duplicate-token head, a fixed-offset head, canonical and shifted induction heads, an anti-induction
head, a copy-suppression head, attention sinks and inert heads, placed at shuffled head indices.
Each model's truth (`Truth`) comes from its construction:
- `induction`: the canonical induction heads;
- `shifted_induction`: the shifted (offset d >= 2) induction heads;
- `circuit`: the heads that carry in-context learning: both kinds of induction head and the
  previous-token / offset heads whose codes they read (anti-induction opposes it; the other heads
  do not take part).

Methods, what each names, the truth it is scored against, and the order its ranks follow:
- `is_induction` (`induction.heads.scores`): the flagged heads, against `induction`; ordered by
  min(prefix_matching - its threshold, copying - its threshold), >= 0 exactly for flagged heads.
- `is_shifted_induction` (`induction.heads.offsets`): the flagged heads, against `shifted_induction`;
  ordered by `OffsetScores.shifted_margin` (the same margin at the best offset >= 2).
- `zero`, `mean`, `resample`, `pattern` ablation and `exact`, `attribution`, `atp-star` patching
  (`induction.measures.effects` on the ICL score of the model's stream, `induction.measures.metrics`), against
  `circuit`: each head's *support* for in-context learning is how much removing it raises the ICL
  score (ablation: effect) or restoring it from the clean run lowers it (patching: -effect). A
  method names the heads whose support is at least `name_fraction` of the largest support
  (and > 0); it orders heads by support. The patching methods also record their time and the
  rank correlation of their support with exact patching's (`spearman_vs_exact`): attribution reads
  ~0 for a previous-token head behind the induction heads' saturated softmax, AtP* recomputes
  that softmax (`circuits.atp`).
- `random` (a control): seeded uniform scores, named by the same fraction rule, against `circuit`.

Scores: precision = named true heads / named heads (None when nothing is named); recall = named
true heads / true heads (None when there are none); `true_head_rank` = the rank, in the method's
order, of its lowest-ranked true head, counting ties pessimistically (1 = first; the ideal is the
number of true heads): how far down the method's list one must read to find every true head.
"""

from __future__ import annotations

import math
import random as _random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits import Head
from circuits.hooks import check_heads
from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
from induction.bench.handbuilt import HeadRole as R
from induction.common.checks import check_choice, check_min
from induction.common.stats import spearman
from induction.heads.config import ScoreConfig
from induction.heads.offsets import DEFAULT_OFFSETS
from induction.heads.scores import build_prompts, score_heads
from induction.inputs.prompts import RepeatedTokensConfig
from induction.loading.devices import resolve_device, resolve_dtype
from induction.measures.effects import ablation_effects, patching_effects
from induction.measures.metrics import STREAM_METRICS, stream_metric_setup

ABLATIONS = ("zero", "mean", "resample", "pattern")
PATCHINGS = ("exact", "attribution", "atp-star")
METHODS = ("is_induction", "is_shifted_induction", *(f"{m} ablation" for m in ABLATIONS),
           *(f"{m} patching" for m in PATCHINGS), "random")
TRUTHS = ("induction", "shifted_induction", "circuit")
METHOD_TRUTH = {"is_induction": "induction", "is_shifted_induction": "shifted_induction"}
"""The truth each method is scored against; every other method is scored against `circuit`."""


# ---- the suite -------------------------------------------------------------------------------------


def _shuffled(heads: Sequence[R], seed: int) -> tuple[R, ...]:
    """`heads` at shuffled indices, so that no method or test can lean on where a role sits."""
    order = list(range(len(heads)))
    _random.Random(seed).shuffle(order)
    return tuple(heads[i] for i in order)


def _small(ln_mlp: bool) -> HandBuiltSpec:
    """V 20, context 40, 8 heads: one canonical head, a shifted head at d = 3 (query lag 1, key lag 4, value lag 2)."""
    layer0 = [R("previous_token"), R("offset", lag=4), R("offset", lag=2), R("duplicate_token"),
              R("fixed_offset", lag=6), R("attention_sink"), R("inert"), R("inert")]
    layer1 = [R("induction", weight=4.0), R("shifted_induction", query_lag=1, key_lag=4, weight=4.0),
              R("anti_induction", weight=-1.0), R("copy_suppression", weight=-1.0), R("self_copy", weight=0.5),
              R("attention_sink"), R("inert"), R("inert")]
    return HandBuiltSpec(layers=(_shuffled(layer0, 1 + ln_mlp), _shuffled(layer1, 11 + ln_mlp)), d_vocab=20, n_ctx=40,
                         ln_mlp=ln_mlp)


def _large(ln_mlp: bool) -> HandBuiltSpec:
    """V 32, context 48, 10 heads: two redundant canonical heads, a shifted head at d = 5 (lags 1, 6, 4)."""
    layer0 = [R("previous_token"), R("offset", lag=6), R("offset", lag=4), R("duplicate_token"),
              R("fixed_offset", lag=3), R("attention_sink"), *[R("inert")] * 4]
    layer1 = [R("induction", weight=3.0), R("induction", weight=3.0),
              R("shifted_induction", query_lag=1, key_lag=6, weight=4.0), R("anti_induction", weight=-1.0),
              R("copy_suppression", weight=-1.0), R("self_copy", weight=0.5), R("attention_sink"), *[R("inert")] * 3]
    return HandBuiltSpec(layers=(_shuffled(layer0, 3 + ln_mlp), _shuffled(layer1, 13 + ln_mlp)), d_vocab=32, n_ctx=48,
                         ln_mlp=ln_mlp)


SUITE: dict[str, Callable[[], HandBuiltSpec]] = {
    "attn-v20-h8": lambda: _small(False),
    "attn-v32-h10": lambda: _large(False),
    "lnmlp-v20-h8": lambda: _small(True),
    "lnmlp-v32-h10": lambda: _large(True),
}
"""The suite's models by name: attention-only (`attn`) and LayerNorm + MLP (`lnmlp`), two sizes each."""


# ---- truth and scoring -----------------------------------------------------------------------------


@dataclass
class Truth:
    """Which heads are what, by construction.

    Attributes:
        induction: the canonical induction heads.
        shifted_induction: the shifted induction heads.
        circuit: the heads that carry in-context learning (module docstring).
        roles: "L{layer}H{head}" -> every head's role.
    """

    induction: list[Head]
    shifted_induction: list[Head]
    circuit: list[Head]
    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: HandBuiltSpec) -> "Truth":
        return cls(induction=spec.heads("induction"), shifted_induction=spec.heads("shifted_induction"),
                   circuit=spec.circuit(), roles=spec.roles())

    def heads(self, name: str) -> list[Head]:
        check_choice("truth", name, TRUTHS)
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {name: [list(h) for h in self.heads(name)] for name in TRUTHS} | {"roles": dict(self.roles)}


@dataclass
class MethodScore:
    """One method on one model, against one truth (module docstring).

    Attributes:
        method: the method's name (`METHODS`).
        truth: the truth it is scored against (`TRUTHS`).
        named: the heads it names.
        precision, recall: of `named` against the truth (None where undefined).
        true_head_rank: the pessimistic rank of its lowest-ranked true head (None without true heads).
        true_head_ranks: each true head's rank, in the truth's order.
        scores: `[layer, head_index]` the score it orders heads by (JSON: None where not finite).
        runtime_s: seconds the method took (the patching methods; None elsewhere).
        spearman_vs_exact: rank correlation of its scores with exact patching's (the patching methods).
    """

    method: str
    truth: str
    named: list[Head]
    precision: float | None
    recall: float | None
    true_head_rank: int | None
    true_head_ranks: list[int]
    scores: Tensor = field(repr=False)
    runtime_s: float | None = None
    spearman_vs_exact: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "truth": self.truth, "precision": self.precision, "recall": self.recall,
                "true_head_rank": self.true_head_rank, "true_head_ranks": self.true_head_ranks,
                "runtime_s": self.runtime_s,
                "spearman_vs_exact": None if self.spearman_vs_exact is None or not math.isfinite(self.spearman_vs_exact)
                else self.spearman_vs_exact,
                "named": [list(h) for h in self.named],
                "scores": [[float(v) if math.isfinite(v) else None for v in row] for row in self.scores.tolist()]}


def pessimistic_ranks(scores: Float[Tensor, "layer head_index"]) -> Float[Tensor, "layer head_index"]:
    """rank[l, h] = the number of heads scoring at least as high as (l, h) (NaN counts as lowest)."""
    flat = torch.nan_to_num(scores.flatten().double(), nan=float("-inf"))
    return (flat[None, :] >= flat[:, None]).sum(-1).reshape(scores.shape).float()


def score_method(
    method: str, truth_name: str, truth: Sequence[Head], scores: Float[Tensor, "layer head_index"],
    named: Bool[Tensor, "layer head_index"],
) -> MethodScore:
    """Precision and recall of `named` against `truth`, and the ranks of the true heads in `scores`' order."""
    named_heads = [(int(layer), int(h)) for layer, h in named.nonzero().tolist()]
    true = [(int(layer), int(h)) for layer, h in truth]
    hits = len(set(named_heads) & set(true))
    ranks = pessimistic_ranks(scores)
    true_ranks = [int(ranks[h]) for h in true]
    return MethodScore(
        method=method, truth=truth_name, named=named_heads,
        precision=hits / len(named_heads) if named_heads else None,
        recall=hits / len(true) if true else None,
        true_head_rank=max(true_ranks) if true_ranks else None, true_head_ranks=true_ranks, scores=scores.float().cpu(),
    )


def name_by_fraction(support: Float[Tensor, "layer head_index"], fraction: float) -> Bool[Tensor, "layer head_index"]:
    """The heads whose support is > 0 and at least `fraction` of the largest support."""
    top = float(torch.nan_to_num(support, nan=float("-inf")).max())
    if top <= 0:
        return torch.zeros_like(support, dtype=torch.bool)
    return (support > 0) & (support >= fraction * top)


@dataclass
class ModelBench:
    """Every method scored on one model.

    Attributes:
        name: the model's name.
        description: its kind and sizes.
        truth: its true heads.
        methods: one `MethodScore` per method, in `METHODS` order.
        baseline: the unablated model's metric (the ICL score by default) on the sequences the causal methods use.
        runtime_s: seconds spent on this model.
    """

    name: str
    description: str
    truth: Truth
    methods: list[MethodScore]
    baseline: float
    runtime_s: float

    def method(self, name: str) -> MethodScore:
        check_choice("method", name, [m.method for m in self.methods])
        return next(m for m in self.methods if m.method == name)


def describe(model: TransformerBridge) -> str:
    cfg = model.cfg
    kind = "attention-only" if cfg.attn_only else "LayerNorm + MLP"
    return f"{kind}, {cfg.n_layers} layers x {cfg.n_heads} heads, vocab {cfg.d_vocab}, context {cfg.n_ctx}"


@dataclass
class BenchConfig:
    """Settings of the benchmark (`induction bench`; the job is `induction.jobs.bench`).

    Attributes:
        models: the suite's models to score (`induction.bench.suite.SUITE`).
        prompts: repeated-random-token prompts for the two detector flags.
        sequences: sequences of each model's stream on which the causal methods measure the metric (>= 2).
        metric: ``icl`` (the ICL score) or ``repeat-loss`` (`induction.measures.metrics`).
        name_fraction: a causal method names the heads whose support is at least this fraction of
            the largest, in (0, 1].
        seed: seeds the prompts, the sequences, resample ablation and the random control.
        device: where the models run (`induction.loading.devices`).
        dtype: their parameters' precision.
    """

    models: tuple[str, ...] = tuple(SUITE)
    prompts: int = 32
    sequences: int = 16
    metric: str = "icl"
    name_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        if not self.models:
            raise ValueError("models must name at least one model of the suite")
        for name in self.models:
            check_choice("bench model", name, tuple(SUITE))
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models repeated in {list(self.models)}")
        check_min("prompts", self.prompts, 1)
        check_min("sequences", self.sequences, 2)  # resample ablation needs another sequence
        check_choice("metric", self.metric, STREAM_METRICS)
        if isinstance(self.name_fraction, bool) or not isinstance(self.name_fraction, (int, float)) \
                or not 0.0 < self.name_fraction <= 1.0:
            raise ValueError(f"name_fraction must be in (0, 1], got {self.name_fraction!r}")
        resolve_device(self.device), resolve_dtype(self.dtype)  # a one-line error before any work

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "models": list(self.models)}


def bench_model(
    model: TransformerBridge,
    truth: Truth,
    name: str,
    cfg: BenchConfig | None = None,
    detector: ScoreConfig | None = None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    progress: bool = False,
) -> ModelBench:
    """Score every method of `METHODS` on `model` against `truth` (module docstring).

    Args:
        model: a model in eval mode (any, not only the suite's) with `induction_info` set.
        truth: its true heads.
        name: how the result names the model.
        cfg: prompts, sequences, metric, naming fraction and seed (`BenchConfig`; `models`,
            `device` and `dtype` are the job's and unused here).
        detector: the detector's thresholds and batch size (`ScoreConfig`; its prompts are `cfg`'s).
        offsets: the offsets the shifted flag scores.
        progress: progress bars.
    """
    cfg = cfg or BenchConfig()
    for what in TRUTHS:
        check_heads(model, truth.heads(what))  # one line naming a head the model does not have
    start = time.perf_counter()
    detector = detector or ScoreConfig()
    detector = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=cfg.prompts, seed=cfg.seed),
                           batch_size=detector.batch_size, prefix_threshold=detector.prefix_threshold,
                           copying_threshold=detector.copying_threshold, n_bootstrap=0,
                           # exhaustive copying, and the shifted flag from the same forward (the one copying rule)
                           copying_sources=0, min_offset=min(offsets), max_offset=max(offsets))
    if tuple(offsets) != detector.offsets:
        raise ValueError(f"offsets must be a contiguous range of integers, got {tuple(offsets)}")
    pt, ct = detector.prefix_threshold, detector.copying_threshold
    prompts = build_prompts(model, detector.prompts)
    scores = score_heads(model, detector, prompts=prompts, progress=progress)
    margin = torch.minimum(scores.prefix_matching - pt, scores.copying - ct)
    results = [score_method("is_induction", "induction", truth.induction, margin, scores.is_induction)]
    shifted = scores.offsets.is_shifted_induction(pt, ct).cpu()
    results.append(score_method("is_shifted_induction", "shifted_induction", truth.shifted_induction,
                                scores.offsets.shifted_margin(pt, ct).cpu(), shifted))

    setup = stream_metric_setup(model, cfg.metric, n_sequences=cfg.sequences, seed=cfg.seed)
    with torch.no_grad():
        unablated = float(setup.metric(model(setup.tokens)))
    for method in ABLATIONS:
        baseline, values = ablation_effects(model, setup, method, seed=cfg.seed, progress=progress)
        support = (values - baseline).float().cpu()  # removing a head that carries ICL raises the ICL score
        results.append(score_method(f"{method} ablation", "circuit", truth.circuit, support,
                                    name_by_fraction(support, cfg.name_fraction)))
    exact = None
    for method in PATCHINGS:
        began = time.perf_counter()
        baseline, _, values = patching_effects(model, setup, method, progress=progress)
        support = (baseline - values).float().cpu()  # restoring a head that carries ICL lowers the ICL score
        scored = score_method(f"{method} patching", "circuit", truth.circuit, support,
                              name_by_fraction(support, cfg.name_fraction))
        scored.runtime_s = time.perf_counter() - began
        exact = support if exact is None else exact  # PATCHINGS starts with exact
        scored.spearman_vs_exact = spearman(exact, support)
        results.append(scored)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    noise = torch.rand(model.cfg.n_layers, model.cfg.n_heads, generator=generator, device="cpu")
    results.append(score_method("random", "circuit", truth.circuit, noise, name_by_fraction(noise, cfg.name_fraction)))
    return ModelBench(name=name, description=describe(model), truth=truth, methods=results, baseline=unablated,
                      runtime_s=time.perf_counter() - start)


def suite_model(name: str) -> tuple[TransformerBridge, Truth]:
    """The suite's model `name`, built, and its truth."""
    check_choice("bench model", name, tuple(SUITE))
    spec = SUITE[name]()
    return build_handbuilt(spec, name=f"<hand-built {name}>"), Truth.of(spec)
