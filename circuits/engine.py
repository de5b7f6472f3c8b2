"""The head-sweep engine: many intervened runs, each replacing some heads' `hook_z`, several to a forward.

`sweep_head_z` is what ablation (`circuits.ablation`) and activation patching
(`circuits.patching`) run. Besides the intervened forwards it owns running the rest of the model
from inside a layer (`run_from_resid_pre`, `run_from_attn_out`) and freezing attention patterns.

How `sweep_head_z` runs an intervention on layer `l`. In TL 4.3, `model(resid,
start_at_layer=l)` feeds `resid` in as embeddings, still executes blocks `0..l-1` and only then
swaps `resid` back in at block `l`, so it saves nothing (README, "Design notes"). Instead the engine caches the unintervened run and uses that `hook_attn_out` is affine
in `hook_z` (`sum_h z_h W_O[h] + b_O`): a change of head `h`'s z moves layer `l`'s attention
output by exactly `(z_new - z_old)_h W_O[l, h]`. It adds that to the cached `hook_attn_out`,
finishes block `l` (`finish_block`: its MLP, if any) and calls blocks `l+1..` on the result, so
neither the layers below nor layer `l`'s attention is recomputed.

Blocks of Hugging Face models need more than the residual: the model's own forward hands every
layer its rotary tables (`position_embeddings=(cos, sin)`: Llama, GPT-NeoX), attention masks and
position ids. The engine records what each block received on the cached run
(`record_block_inputs`) and hands the same to the resumed blocks (`BlockInputs`: key/value caches
dropped, batch-sized tensors repeated for the runs stacked along the batch), so RoPE, sliding
windows and masks are applied exactly as in the model's forward. Parallel blocks (GPT-NeoX /
Pythia, GPT-J: attention and MLP both read the block input) are finished from the cached MLP output.

Before taking this path it checks on the cached run that the shortcut reproduces the model
(`resume_check`, in the stacked layout it will use, to a tolerance set by the model's dtype,
`resume_tolerance`); where it does not (a post-attention norm, a soft-capped unembedding, a block
input the replay cannot reproduce), it falls back to full forwards with a `hook_z` hook, still
several runs to a forward.
"""

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from circuits import memory
from circuits.hooks import (
    Metric,
    attn_out_name,
    check_metric_value,
    check_per_prompt_value,
    head_outputs,
    n_layers_heads,
    pattern_name,
    require_eval,
    resid_pre_name,
    z_name,
)
from circuits.progress import progress_bar
from circuits.resume import (
    BlockInputs,
    cached_mlp_out,
    record_block_inputs,
    resume_cache_names,
    resume_check,
    run_from_attn_out,
)


def check_pattern_edits(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> None:
    """Raise unless edits to `hook_pattern` change the attention output, in every layer.

    Bridges that delegate attention to the Hugging Face module fire `hook_pattern` after the
    values were weighted and discard edits (with a warning); pattern-preserving interventions
    would then silently compute something else. The probe runs `n_layers` copies of one prompt
    and, in copy `l` only, sets layer `l`'s pattern to NaN: where the edit is honoured, that
    copy's `hook_z` at layer `l` is NaN whatever the weights (NaN times zero is NaN).
    """
    n_layers = int(model.cfg.n_layers)
    probe = tokens[:1].expand(n_layers, -1)

    def poison(layer: int) -> Callable:
        def hook(pattern: Tensor, hook: object) -> Tensor:
            pattern = pattern.clone()
            pattern[layer] = float("nan")
            return pattern

        return hook

    honoured = [False] * n_layers

    def record(layer: int) -> Callable:
        def hook(z: Tensor, hook: object) -> None:
            honoured[layer] = bool(torch.isnan(z[layer]).all())

        return hook

    fwd_hooks = [(pattern_name(layer), poison(layer)) for layer in range(n_layers)]
    fwd_hooks += [(z_name(layer), record(layer)) for layer in range(n_layers)]
    with warnings.catch_warnings():
        # TL warns that the edit is discarded; the error below says so more usefully.
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad():
            model.run_with_hooks(probe, fwd_hooks=fwd_hooks)
    ignored = [layer for layer in range(n_layers) if not honoured[layer]]
    if ignored:
        raise RuntimeError(
            f"edits to hook_pattern do not reach the attention output in layers {ignored} of this "
            "model (its attention is computed inside the wrapped Hugging Face module, which "
            "discards them), so pattern-preserving ablation cannot be computed; use a native "
            "bridge (TransformerBridge.boot_native) or a method other than 'pattern'"
        )


def _freeze_pattern_hooks(
    patterns: Mapping[int, Tensor], layers: Sequence[int], copies: int
) -> list[tuple[str, Callable]]:
    """Hooks replacing the pattern of `layers` by the cached one, repeated for `copies` runs."""

    def freeze(frozen: Tensor) -> Callable:
        def hook(pattern: Tensor, hook: object) -> Tensor:
            return frozen

        return hook

    return [
        (pattern_name(layer), freeze(patterns[layer].repeat(copies, 1, 1, 1))) for layer in layers
    ]


@dataclass(frozen=True)
class ZEdit:
    """Give head `head` of layer `layer` its source `hook_z`, at position `pos` or everywhere."""

    layer: int
    head: int
    pos: int | None = None


Run = tuple[ZEdit, ...]


"""One intervened forward: the edits applied together."""


@dataclass
class SweepResult:
    """Metric of each intervened run, and of the unintervened run (`baseline`).

    With a per-prompt metric (one value per prompt), `values` is `[run, batch]` and `baseline`
    `[batch]`; with a 0-d metric, `[run]` and a 0-d tensor.
    """

    values: Float[Tensor, "run *per_prompt"]  # noqa: F821 (a jaxtyping shape, not a name)
    baseline: Tensor
    resumed: bool
    """Whether the runs resumed inside the edited layer (`resume_check` passed)."""


_PATTERN_BUDGET = 2**20


"""CPU: attention-pattern entries per stacked forward that the default batching aims for."""


_CUDA_MEMORY_FRACTION = 0.5


"""CUDA: the share of the free device memory the default batching lets one stacked forward use."""


def forward_bytes(model: TransformerBridge, batch: int, n_pos: int) -> int:
    """The activation memory one run adds to a stacked no-grad forward: `circuits.memory.forward_bytes`
    (the one formula the job planner, `induction.loading.memory`, uses too) at the model's widths."""
    cfg = model.cfg
    param = next(iter(model.parameters()), None)
    return memory.forward_bytes(d_model=int(cfg.d_model), d_mlp=int(getattr(cfg, "d_mlp", None) or 0),
                                n_heads=int(cfg.n_heads), d_vocab=int(cfg.d_vocab), batch=batch, n_pos=n_pos,
                                element_size=param.element_size() if param is not None else 4,
                                n_layers=int(cfg.n_layers),
                                kv_width=int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads) * int(cfg.d_head))


def default_runs_per_forward(model: TransformerBridge, batch: int, n_pos: int) -> int:
    """Runs stacked into one forward by default (at least one; `runs_per_forward` overrides it).

    - CUDA: as many as fit in half the free device memory (`torch.cuda.mem_get_info`) at
      `forward_bytes` per run. On a GPU a forward's cost barely grows with its batch until the
      device is busy, so fewer, larger forwards win; the free memory is the limit.
    - Elsewhere (CPU, MPS): as many as keep the attention patterns of one forward within about
      2**20 entries (4 MB in float32). Stacking saves the per-forward overhead of the bridge, but
      on CPU the cost per row grows once a forward's attention tensors outgrow the cache.
    """
    param = next(iter(model.parameters()), None)
    free = free_device_memory(param.device if param is not None else torch.device("cpu"))
    if free is not None:
        return max(1, int(_CUDA_MEMORY_FRACTION * free) // forward_bytes(model, batch, n_pos))
    return max(1, _PATTERN_BUDGET // (batch * int(model.cfg.n_heads) * n_pos * n_pos))


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (`torch.cuda.mem_get_info`); None on other devices."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def _positions(edit: ZEdit, n_pos: int) -> slice:
    if edit.pos is None:
        return slice(None)
    pos = edit.pos % n_pos
    return slice(pos, pos + 1)


def sweep_head_z(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    runs: Sequence[Run],
    source_z: Callable[[int], Tensor],
    *,
    freeze_patterns: bool = False,
    runs_per_forward: int | None = None,
    resume: bool = True,
    per_prompt: bool = False,
    progress: bool = False,
) -> SweepResult:
    """`metric` of many runs on `tokens`, each replacing some heads' `hook_z` by a source value.

    Args:
        model: The model, in eval mode.
        tokens: The input of every run, `[batch, pos]`.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor, or to one value per prompt
            (`[batch]`); applied to each run separately.
        runs: Each run is a tuple of `ZEdit`s applied together.
        source_z: `source_z(layer)` is the replacement `hook_z` of that layer, broadcastable to
            `[batch, pos, head_index, d_head]` (a clean run's z, zeros, a mean, ...).
        freeze_patterns: Also replace every layer's attention pattern by its value on the
            unintervened run (Olsson et al. 2022's pattern-preserving ablation).
        runs_per_forward: How many runs share one forward (stacked along the batch); default
            `default_runs_per_forward`.
        resume: Resume each run inside its edited layer when `resume_check` allows (exact;
            `False` forces full forwards, for checking).
        per_prompt: Accept a metric that returns one value per prompt (`[batch]`) as well as a
            0-d one; by default the metric must return a 0-d tensor.
        progress: Show a progress bar over forwards.

    Returns:
        `SweepResult` with one metric value per run, in the order of `runs`.
    """
    require_eval(model)
    n_layers, n_heads = n_layers_heads(model)
    batch, n_pos = tokens.shape
    if runs_per_forward is not None and runs_per_forward < 1:
        raise ValueError(f"runs_per_forward must be >= 1, got {runs_per_forward}")
    chunk = runs_per_forward or default_runs_per_forward(model, batch, n_pos)
    layers = sorted({edit.layer for run in runs for edit in run})
    single_layer = all(len({edit.layer for edit in run}) == 1 for run in runs)
    try_resume = bool(runs) and resume and single_layer

    names = resume_cache_names(model, layers) if try_resume else []
    names += [z_name(layer) for layer in layers]
    if freeze_patterns:
        check_pattern_edits(model, tokens)
        names += [pattern_name(layer) for layer in range(n_layers)]
    wanted = set(names)
    with torch.no_grad(), record_block_inputs(model) if try_resume else contextlib.nullcontext() as inputs:
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)

    def evaluate(run_logits: Tensor) -> Tensor:
        value = metric(run_logits)
        value = check_per_prompt_value(value, batch) if per_prompt else check_metric_value(value)
        return value.detach().float().cpu()

    baseline = evaluate(logits)
    # Checked in the stacked layout the runs will use (2 copies stand for any number).
    copies = min(chunk, len(runs), 2)
    resumed = try_resume and resume_check(model, cache, logits, layers, inputs, copies)
    patterns = (
        {layer: cache[pattern_name(layer)] for layer in range(n_layers)} if freeze_patterns else {}
    )
    sources = {layer: source_z(layer).to(cache[z_name(layer)].dtype) for layer in layers}

    # Resumed runs share their layer within a forward; full reruns can mix anything.
    order = list(range(len(runs)))
    if resumed:
        order.sort(key=lambda i: runs[i][0].layer)
    chunks: list[list[int]] = []
    for i in order:
        if chunks and len(chunks[-1]) < chunk and (
            not resumed or runs[chunks[-1][0]][0].layer == runs[i][0].layer
        ):
            chunks[-1].append(i)
        else:
            chunks.append([i])

    values = torch.full((len(runs), *baseline.shape), float("nan"), device="cpu")
    for members in progress_bar(chunks, enabled=progress, stage=True, desc="intervened forwards"):
        group = [runs[i] for i in members]
        if resumed:
            out = _resumed_forward(model, cache, inputs, sources, group, patterns, n_pos)
        else:
            out = _full_forward(model, tokens, sources, group, patterns, n_pos)
        for g, i in enumerate(members):
            values[i] = evaluate(out[g * batch : (g + 1) * batch])
    return SweepResult(values=values, baseline=baseline, resumed=resumed)


def _resumed_forward(
    model: TransformerBridge,
    cache: ActivationCache,
    inputs: BlockInputs,
    sources: Mapping[int, Tensor],
    group: Sequence[Run],
    patterns: Mapping[int, Tensor],
    n_pos: int,
) -> Tensor:
    """Logits of `group` (runs editing one layer), stacked along the batch, resumed in-layer."""
    layer = group[0][0].layer
    z = cache[z_name(layer)]
    attn_out = cache[attn_out_name(layer)]
    # The change of the attention output of each head if it took its source value everywhere.
    delta = head_outputs(sources[layer].expand_as(z) - z, model.W_O[layer])  # [b, p, h, d_model]
    stacked = []
    for run in group:
        edited = attn_out.clone()
        for edit in run:
            where = _positions(edit, n_pos)
            edited[:, where] += delta[:, where, edit.head]
        stacked.append(edited)
    copies = len(group)
    mlp_out = cached_mlp_out(model, cache, layer)
    later = [l for l in patterns if l > layer]
    with torch.no_grad(), model.hooks(fwd_hooks=_freeze_pattern_hooks(patterns, later, copies)):
        return run_from_attn_out(
            model,
            layer,
            cache[resid_pre_name(layer)].repeat(copies, 1, 1),
            torch.cat(stacked),
            None if mlp_out is None else mlp_out.repeat(copies, 1, 1),
            inputs,
        )


def _full_forward(
    model: TransformerBridge,
    tokens: Tensor,
    sources: Mapping[int, Tensor],
    group: Sequence[Run],
    patterns: Mapping[int, Tensor],
    n_pos: int,
) -> Tensor:
    """Logits of `group` (any runs), stacked along the batch, each a full forward with hooks."""
    batch = tokens.shape[0]

    def edit_layer(layer: int) -> Callable:
        def hook(z: Tensor, hook: object) -> Tensor:
            z = z.clone()
            source = sources[layer].expand(batch, *z.shape[1:])
            for g, run in enumerate(group):
                rows = slice(g * batch, (g + 1) * batch)
                for edit in run:
                    if edit.layer == layer:
                        where = _positions(edit, n_pos)
                        z[rows, where, edit.head] = source[:, where, edit.head]
            return z

        return hook

    edited = sorted({edit.layer for run in group for edit in run})
    fwd_hooks = [(z_name(layer), edit_layer(layer)) for layer in edited]
    fwd_hooks += _freeze_pattern_hooks(patterns, sorted(patterns), len(group))
    with torch.no_grad():
        return model.run_with_hooks(tokens.repeat(len(group), 1), fwd_hooks=fwd_hooks)
