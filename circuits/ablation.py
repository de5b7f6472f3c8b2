"""Ablation of attention heads: one head at a time, a set at once, and random-set controls."""

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits.engine import Run, ZEdit, sweep_head_z
from circuits.hooks import Head, Metric, check_heads, n_layers_heads, z_name

Method = Literal["zero", "mean", "resample", "pattern"]
METHODS: tuple[str, ...] = ("zero", "mean", "resample", "pattern")


def derangement(n: int, generator: torch.Generator) -> Int[Tensor, " n"]:
    """A uniformly random permutation of `range(n)` with no fixed point, by rejection (P -> 1/e).

    Resample ablation uses it so that no prompt receives its own activations; few-shot "flipped"
    labels use it so that no label maps to itself.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    while True:
        perm = torch.randperm(n, generator=generator, device="cpu")
        if not bool((perm == torch.arange(n, device="cpu")).any()):
            return perm


def _resample_rows(n_batch: int, n_reference: int, same_batch: bool, seed: int) -> Tensor:
    """For each prompt, the reference prompt whose z it receives: never itself."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if same_batch:
        if n_batch < 2:
            raise ValueError("resample ablation needs at least 2 prompts (or reference_tokens)")
        return derangement(n_batch, generator)
    if n_reference >= n_batch:
        return torch.randperm(n_reference, generator=generator, device="cpu")[:n_batch]
    return torch.randint(n_reference, (n_batch,), generator=generator, device="cpu")


def ablation_source(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    method: Method,
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
    seed: int = 0,
) -> Callable[[int], Tensor]:
    """The value each ablation method writes into a head's `hook_z`, per layer.

    - `zero`: 0.
    - `mean`: the mean of `hook_z` over the reference batch, per position
      (`[1, pos, head_index, d_head]`).
    - `resample`: `hook_z` of another prompt of the reference batch (resampling ablation,
      Chan et al. 2022), chosen by a permutation seeded with `seed`; with the default
      reference (the batch itself) no prompt receives its own activations.
    - `pattern`: 0, combined by the caller with frozen attention patterns.

    Args:
        model: The model.
        tokens: The prompts being ablated.
        method: One of `zero`, `mean`, `resample`, `pattern`.
        reference_tokens: The reference batch for `mean`/`resample` (default `tokens`).
        seed: Seed of the `resample` permutation.

    Returns:
        `source(layer)`, broadcastable to `[batch, pos, head_index, d_head]`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method in ("zero", "pattern"):
        # On the model's device: the tokens may be on the CPU, and a [1, 1, 1, 1] CPU tensor cannot meet CUDA activations.
        param = next(iter(model.parameters()), None)
        zero = torch.zeros((), device=tokens.device if param is None else param.device)
        return lambda layer: zero.reshape(1, 1, 1, 1)
    same_batch = reference_tokens is None
    reference = tokens if reference_tokens is None else reference_tokens.to(tokens.device)
    if reference.shape[1] != tokens.shape[1]:
        raise ValueError(
            f"reference_tokens must have the prompts' length {tokens.shape[1]}, "
            f"got {reference.shape[1]}"
        )
    with torch.no_grad():
        _, cache = model.run_with_cache(
            reference, names_filter=lambda name: name.endswith("attn.hook_z")
        )
    if method == "mean":
        return lambda layer: cache[z_name(layer)].mean(dim=0, keepdim=True)
    rows = _resample_rows(tokens.shape[0], reference.shape[0], same_batch, seed)
    return lambda layer: cache[z_name(layer)][rows.to(tokens.device)]


def ablate_heads(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    method: Method = "zero",
    heads: Sequence[Head] | None = None,
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
    seed: int = 0,
    *,
    runs_per_forward: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head_index"]:
    """`metric` with one head ablated at a time.

    Entry `(l, h)` is `metric(logits)` with head `(l, h)`'s output (`hook_z`, all positions)
    replaced as `method` says (see `ablation_source`). `method="pattern"` is Olsson et al.
    2022's pattern-preserving ablation: the head's output is zeroed and the attention patterns
    of all heads are frozen to their values on the unablated run, so downstream heads cannot
    re-route around the missing head; it raises on bridges whose attention ignores edits to
    `hook_pattern` (see `circuits.hooks.check_pattern_edits`).

    Args:
        model: A TransformerBridge in eval mode.
        tokens: The prompts, `[batch, pos]`.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor.
        method: `zero`, `mean`, `resample` or `pattern`.
        heads: Only these `(layer, head)` (the other entries are NaN); default all.
        reference_tokens: Reference batch for `mean`/`resample` (default `tokens`).
        seed: Seed of the `resample` permutation.
        runs_per_forward: Ablated runs stacked into one forward (default:
            `circuits.engine.default_runs_per_forward`, sized by free memory on CUDA).
        progress: Show a progress bar.

    Returns:
        `[layer, head_index]` tensor of metric values.
    """
    n_layers, n_heads = n_layers_heads(model)
    wanted = (
        [(l, h) for l in range(n_layers) for h in range(n_heads)]
        if heads is None
        else check_heads(model, heads)
    )
    result = sweep_head_z(
        model,
        tokens,
        metric,
        [(ZEdit(l, h),) for l, h in wanted],
        ablation_source(model, tokens, method, reference_tokens, seed),
        freeze_patterns=method == "pattern",
        runs_per_forward=runs_per_forward,
        progress=progress,
    )
    out = torch.full((n_layers, n_heads), float("nan"), device="cpu")
    for (layer, head), value in zip(wanted, result.values):
        out[layer, head] = value
    return out


def ablate_head_sets(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    head_sets: Sequence[Sequence[Head]],
    method: Method = "zero",
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
    seed: int = 0,
    *,
    progress: bool = False,
) -> Float[Tensor, "set *per_prompt"]:  # noqa: F821 (a jaxtyping shape, not a name)
    """`metric` with each set of heads ablated together (one run per set; methods as `ablate_heads`).

    `metric` may return a 0-d tensor or one value per prompt (`[batch]`), e.g. each prompt's
    correctness, so that a caller can put confidence intervals over prompts on every set.

    Args:
        model: A TransformerBridge in eval mode.
        tokens: The prompts.
        metric: Logits to a 0-d tensor, or to `[batch]` per-prompt values.
        head_sets: Each a list of `(layer, head)` pairs ablated together (an empty set is the
            unablated run).
        method: `zero`, `mean`, `resample` or `pattern`.
        reference_tokens: Reference batch for `mean`/`resample` (default `tokens`).
        seed: Seed of the `resample` permutation.
        progress: Show a progress bar.

    Returns:
        `[set]` (0-d metric) or `[set, batch]` (per-prompt metric) tensor of metric values.
    """
    runs: list[Run] = [tuple(ZEdit(l, h) for l, h in check_heads(model, s)) for s in head_sets]
    return sweep_head_z(
        model,
        tokens,
        metric,
        runs,
        ablation_source(model, tokens, method, reference_tokens, seed),
        freeze_patterns=method == "pattern",
        per_prompt=True,
        progress=progress,
    ).values


def ablate_head_set(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    heads: Sequence[Head],
    method: Method = "zero",
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
    seed: int = 0,
) -> float:
    """`metric` (0-d) with all of `heads` ablated together, in one forward (see `ablate_head_sets`)."""
    return float(ablate_head_sets(model, tokens, metric, [heads], method, reference_tokens, seed)[0])


def layer_matched_random_heads(
    model: TransformerBridge,
    heads: Sequence[Head],
    n_draws: int = 10,
    seed: int = 0,
) -> list[list[Head]]:
    """Random head sets with the same number of heads in each layer as `heads`, disjoint from it.

    The control of Crosbie & Shutova 2024 (arXiv:2407.07011): an effect of ablating a set of
    heads means something only next to the effect of ablating as many random heads drawn from
    the same layers. Draw `d` uses `torch.Generator("cpu").manual_seed(seed + d)`.

    Args:
        model: The model (for its head counts).
        heads: The set to match.
        n_draws: Number of random sets.
        seed: Base seed.

    Returns:
        `n_draws` lists of `(layer, head)`, each sorted.
    """
    chosen = check_heads(model, heads)
    _, n_heads = n_layers_heads(model)
    per_layer: dict[int, int] = {}
    for layer, _ in set(chosen):
        per_layer[layer] = per_layer.get(layer, 0) + 1
    for layer, k in per_layer.items():
        if n_heads - k < k:
            raise ValueError(
                f"layer {layer} has {k} of its {n_heads} heads in the set, leaving too few "
                "other heads for a layer-matched random set"
            )
    draws = []
    for d in range(n_draws):
        generator = torch.Generator(device="cpu").manual_seed(seed + d)
        drawn = []
        for layer in sorted(per_layer):
            others = [h for h in range(n_heads) if (layer, h) not in chosen]
            picks = torch.randperm(len(others), generator=generator, device="cpu")[: per_layer[layer]]
            drawn += [(layer, others[int(i)]) for i in picks]
        draws.append(sorted(drawn))
    return draws


def random_head_control(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    heads: Sequence[Head],
    method: Method = "zero",
    n_draws: int = 10,
    seed: int = 0,
    reference_tokens: Int[Tensor, "ref_batch pos"] | None = None,
    *,
    progress: bool = False,
) -> Float[Tensor, " draw"]:
    """`metric` with layer-matched random head sets ablated, one value per draw.

    Compare with `ablate_head_set(model, tokens, metric, heads, method)`: the random sets
    (`layer_matched_random_heads(model, heads, n_draws, seed)`) have as many heads in each layer
    as `heads` and none of them (Crosbie & Shutova 2024).

    Args:
        model: A TransformerBridge in eval mode.
        tokens: The prompts.
        metric: Logits to a 0-d tensor.
        heads: The head set whose control this is.
        method: `zero`, `mean`, `resample` or `pattern`.
        n_draws: Number of random sets.
        seed: Seed of the draws (and of the `resample` permutation).
        reference_tokens: Reference batch for `mean`/`resample` (default `tokens`).
        progress: Show a progress bar.

    Returns:
        `[draw]` tensor of metric values.
    """
    draws = layer_matched_random_heads(model, heads, n_draws, seed)
    return ablate_head_sets(model, tokens, metric, draws, method, reference_tokens, seed, progress=progress)
