"""The head-sweep engine: many intervened runs, each replacing some heads' `hook_z`, several to a forward.

`sweep_head_z` is what ablation (`circuits.ablation`) and activation patching
(`circuits.patching`) run. Besides the intervened forwards it owns running the rest of the model
from inside a layer (`run_from_resid_pre`, `run_from_resid_mid`) and freezing attention patterns.

How `sweep_head_z` runs an intervention on layer `l`. In TL 4.3, `model(resid,
start_at_layer=l)` feeds `resid` in as embeddings, still executes blocks `0..l-1` and only then
swaps `resid` back in at block `l`, so it saves nothing (measured on 4 layers, batch 8 x 64
tokens, one thread: 14.6 ms against 14.0 ms for a full forward; calling `blocks[3:]` directly,
2.4 ms). Instead the engine caches the unintervened run and uses that `hook_attn_out` is affine
in `hook_z` (`sum_h z_h W_O[h] + b_O`): a change of head `h`'s z moves the residual after layer
`l`'s attention by exactly `(z_new - z_old)_h W_O[l, h]`. It adds that to the cached `resid_mid`,
finishes block `l` (its MLP, if any) and calls blocks `l+1..` on the result, so neither the
layers below nor layer `l`'s attention is recomputed. Before taking this path it checks on the
cached run that the shortcut reproduces the model (`resume_check`); where it does not (a
post-attention norm, a block that needs more than the residual, a soft-capped unembedding), it
falls back to full forwards with a `hook_z` hook, still several runs to a forward.
"""

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from circuits.hooks import (
    FINAL_RESID,
    Metric,
    allclose,
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

# ---- running from inside a layer --------------------------------------------------------------


def _block_output(output: Tensor | tuple) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def run_from_resid_pre(
    model: TransformerBridge, resid: Float[Tensor, "batch pos d_model"], layer: int
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of the model resumed at block `layer` from the residual stream entering it.

    Calls `blocks[layer:]`, `ln_final` and `unembed` directly (their hooks fire as in a full
    forward). Exact for blocks that need nothing but the residual (native bridges, GPT-2/Neo
    style); `resume_check` verifies this on a cached run before the engine relies on it.
    """
    x = resid
    for block in model.blocks[layer:]:
        x = _block_output(block(x))
    return model.unembed(model.ln_final(x))


def finish_block(
    model: TransformerBridge, resid_mid: Float[Tensor, "batch pos d_model"], layer: int
) -> Float[Tensor, "batch pos d_model"]:
    """The residual leaving block `layer`, given the residual after its attention.

    Sequential (pre-norm) blocks add `mlp(ln2(resid_mid))`; attention-only blocks add nothing.
    """
    block = model.blocks[layer]
    if not hasattr(block, "mlp"):
        return resid_mid
    mlp_in = block.ln2(resid_mid) if hasattr(block, "ln2") else resid_mid
    return resid_mid + block.mlp(mlp_in)


def run_from_resid_mid(
    model: TransformerBridge, resid_mid: Float[Tensor, "batch pos d_model"], layer: int
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of the model resumed inside block `layer`, after its attention."""
    resid = finish_block(model, resid_mid, layer)
    if layer + 1 < model.cfg.n_layers:
        return run_from_resid_pre(model, resid, layer + 1)
    return model.unembed(model.ln_final(resid))


def resume_cache_names(model: TransformerBridge, layers: Sequence[int]) -> list[str]:
    """Hooks `resume_check` and the resumed runs need from the unintervened run."""
    n_layers = int(model.cfg.n_layers)
    names = {FINAL_RESID}
    for layer in layers:
        names |= {z_name(layer), resid_pre_name(layer), attn_out_name(layer)}
        if layer + 1 < n_layers:
            names.add(resid_pre_name(layer + 1))
    return sorted(names)


def resume_check(
    model: TransformerBridge,
    cache: ActivationCache,
    logits: Float[Tensor, "batch pos d_vocab"],
    layers: Sequence[int],
) -> bool:
    """Whether resuming inside `layers` reproduces the model, checked on a cached run.

    Three checks, all on the unintervened run: `hook_attn_out` equals `sum_h z_h W_O[h]` plus a
    constant (so a change of z moves the residual by `delta_z W_O`, no post-attention norm);
    `finish_block` reproduces the next block's input; and the resumed run from the lowest layer
    reproduces the logits (blocks callable on the residual alone, final norm and unembedding as
    in the model's own forward).
    """
    n_layers = int(model.cfg.n_layers)
    try:
        with torch.no_grad():
            for layer in layers:
                z = cache[z_name(layer)]
                attn_out = cache[attn_out_name(layer)]
                rest = attn_out - head_outputs(z, model.W_O[layer]).sum(dim=-2)
                if not allclose(rest, rest[:1, :1].expand_as(rest)):
                    return False
                resid_mid = cache[resid_pre_name(layer)] + attn_out
                following = (
                    cache[resid_pre_name(layer + 1)] if layer + 1 < n_layers else cache[FINAL_RESID]
                )
                if not allclose(finish_block(model, resid_mid, layer), following):
                    return False
            lowest = min(layers)
            resid_mid = cache[resid_pre_name(lowest)] + cache[attn_out_name(lowest)]
            return allclose(run_from_resid_mid(model, resid_mid, lowest), logits)
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError):
        # A block that needs more than the residual (masks, rotary tables) cannot be resumed.
        return False


# ---- attention-pattern freezing ---------------------------------------------------------------


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


# ---- the sweep engine -------------------------------------------------------------------------


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
"""Attention-pattern entries per stacked forward that the default batching aims for."""


def default_runs_per_forward(batch: int, n_pos: int, n_heads: int) -> int:
    """Runs stacked into one forward by default: as many as keep the attention patterns of one
    forward within about 2**20 entries (4 MB in float32), at least one.

    Stacking saves the per-forward overhead of the bridge, but on CPU the cost per row grows
    once a forward's attention tensors outgrow the cache: a block on 64 rows of 64 tokens took
    43 ms against 2.9 ms on 8 rows (measured, one thread), and patching a 4-layer x 8-head model
    on batch 8 x 64 was fastest stacking 2 to 4 runs.
    """
    return max(1, _PATTERN_BUDGET // (batch * n_heads * n_pos * n_pos))


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
    chunk = runs_per_forward or default_runs_per_forward(batch, n_pos, n_heads)
    if chunk < 1:
        raise ValueError(f"runs_per_forward must be >= 1, got {chunk}")
    layers = sorted({edit.layer for run in runs for edit in run})
    single_layer = all(len({edit.layer for edit in run}) == 1 for run in runs)

    names = resume_cache_names(model, layers) if (resume and single_layer) else []
    names += [z_name(layer) for layer in layers]
    if freeze_patterns:
        check_pattern_edits(model, tokens)
        names += [pattern_name(layer) for layer in range(n_layers)]
    wanted = set(names)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    def evaluate(run_logits: Tensor) -> Tensor:
        value = metric(run_logits)
        value = check_per_prompt_value(value, batch) if per_prompt else check_metric_value(value)
        return value.detach().float().cpu()

    baseline = evaluate(logits)
    resumed = bool(runs) and resume and single_layer and resume_check(model, cache, logits, layers)
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

    values = torch.full((len(runs), *baseline.shape), float("nan"))
    for members in tqdm(chunks, disable=not progress, desc="intervened forwards"):
        group = [runs[i] for i in members]
        if resumed:
            out = _resumed_forward(model, cache, sources, group, patterns, n_pos)
        else:
            out = _full_forward(model, tokens, sources, group, patterns, n_pos)
        for g, i in enumerate(members):
            values[i] = evaluate(out[g * batch : (g + 1) * batch])
    return SweepResult(values=values, baseline=baseline, resumed=resumed)


def _resumed_forward(
    model: TransformerBridge,
    cache: ActivationCache,
    sources: Mapping[int, Tensor],
    group: Sequence[Run],
    patterns: Mapping[int, Tensor],
    n_pos: int,
) -> Tensor:
    """Logits of `group` (runs editing one layer), stacked along the batch, resumed in-layer."""
    layer = group[0][0].layer
    z = cache[z_name(layer)]
    resid_mid = cache[resid_pre_name(layer)] + cache[attn_out_name(layer)]
    # The residual change of each head if it took its source value everywhere.
    delta = head_outputs(sources[layer].expand_as(z) - z, model.W_O[layer])  # [b, p, h, d_model]
    stacked = []
    for run in group:
        resid = resid_mid.clone()
        for edit in run:
            where = _positions(edit, n_pos)
            resid[:, where] += delta[:, where, edit.head]
        stacked.append(resid)
    later = [l for l in patterns if l > layer]
    with torch.no_grad(), model.hooks(fwd_hooks=_freeze_pattern_hooks(patterns, later, len(group))):
        return run_from_resid_mid(model, torch.cat(stacked), layer)


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
