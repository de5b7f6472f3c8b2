"""Path patching: one sender head's output reaching one receiver head through its query, key or value only.

Definition (Wang et al. 2022; Goldowsky-Dill et al. 2023), in the direction of `circuits.patch_heads`
(the corrupted run receives clean activations, "denoising"). For a sender head `s = (l_s, h_s)`, a
receiver head `r = (l_r, h_r)` with `l_r > l_s` and an input `X` in q, k, v:

1. Forward 1 (the frozen run): the corrupted run with every head's `hook_z` and every MLP output
   frozen at its corrupted value except the sender's, which takes its clean value. The residual
   entering block `l_r` is then the corrupted one plus the sender's direct change,
   `delta_s = (z_s^clean - z_s^corrupted) W_O[s]` (heads are additive; nothing else moved).
2. The receiver's input `X` is computed from that residual (through the block's own LayerNorm, RoPE
   and masks, as the model computes it); its other two inputs stay at their corrupted values. The
   receiver's `hook_z` is recomputed from them.
3. Forward 2: the corrupted run with head `r`'s `hook_z` replaced by the recomputed one; everything
   downstream of the receiver is recomputed (other heads of `l_r` and lower layers are untouched).
   The value is `metric(logits)`; the effect is that minus `metric(corrupted run)`.

The single-input numbers separate K-composition (the previous-token head read through the
induction head's keys) from Q- and V-composition, which whole-head patching and ablation mix.
For the other direction (noising: which paths are necessary), swap the token arguments.

How it runs. Step 2 calls block `l_r` directly on the corrupted residual plus `delta_s`, several
senders stacked along the batch, with the two other inputs' hooks (`hook_q`, `hook_k`, `hook_v`)
set to their cached corrupted values and `hook_z` read; step 3 adds `(z_new - z_old) W_O[r]` to the
cached `hook_attn_out` and resumes after the attention (`circuits.engine.run_from_attn_out`),
several paths to a forward. Both need what the engine's `resume_check` verifies (plus that the
block called directly reproduces its cached `hook_z`); where that fails, both steps are full
forwards with hooks (step 2 adds `delta_s` at `hook_resid_pre`). `tests/reference/path_patching.py`
holds the hooks-only implementation (frozen run, then the receiver's input, then its z) the
numbers are checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

from circuits.engine import default_runs_per_forward
from circuits.hooks import (
    Head,
    Metric,
    allclose,
    attn_out_name,
    check_heads,
    check_metric_value,
    check_per_prompt_value,
    head_outputs,
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
    resume_tolerance,
    run_from_attn_out,
)

INPUTS = ("q", "k", "v")
"""The receiver inputs a path can end in: query, key, value."""


def input_name(layer: int, which: str) -> str:
    """`blocks.{layer}.attn.hook_{q|k|v}`: `# [batch, pos, head_index (kv heads for k, v), d_head]`."""
    return f"blocks.{layer}.attn.hook_{which}"


@dataclass(frozen=True)
class HeadPath:
    """The path from `sender`'s output into `receiver`'s `input` (q, k or v)."""

    sender: Head
    receiver: Head
    input: str

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"a path's input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.receiver[0] <= self.sender[0]:
            raise ValueError(f"a path's receiver must sit in a later layer than its sender, got sender "
                             f"L{self.sender[0]}H{self.sender[1]} and receiver L{self.receiver[0]}H{self.receiver[1]}")

    def label(self) -> str:
        return f"L{self.sender[0]}H{self.sender[1]}->L{self.receiver[0]}H{self.receiver[1]}.{self.input}"


def all_paths(
    model: TransformerBridge,
    senders: Sequence[Head] | None = None,
    receivers: Sequence[Head] | None = None,
    inputs: Sequence[str] = INPUTS,
) -> list[HeadPath]:
    """Every path from `senders` (default: every head) into `receivers` (default: every head) through
    `inputs`, receiver in a later layer than sender; ordered sender, receiver, input."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    every = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    senders = check_heads(model, every if senders is None else senders)
    receivers = check_heads(model, every if receivers is None else receivers)
    for which in inputs:
        if which not in INPUTS:
            raise ValueError(f"inputs must be among {', '.join(INPUTS)}, got {which!r}")
    return [HeadPath(s, r, x) for s in senders for r in receivers if r[0] > s[0] for x in inputs]


@dataclass
class PathPatchResult:
    """Metric of each path-patched run, and of the corrupted run (`baseline`).

    `values[i]` belongs to `paths[i]`; with a per-prompt metric, `values` is `[path, batch]` and
    `baseline` `[batch]`. `effects = values - baseline`.
    """

    paths: list[HeadPath]
    values: Tensor
    baseline: Tensor
    resumed: bool

    @property
    def effects(self) -> Tensor:
        return self.values - self.baseline


# ---- one layer's attention with some inputs read from a patched residual -------------------------


def _other_inputs_hooks(cache: ActivationCache, layer: int, patched: Sequence[str], copies: int) -> list:
    """Hooks setting the inputs of `layer` not in `patched` to their cached (corrupted) values."""

    def keep(value: Tensor) -> Callable:
        def hook(x: Tensor, hook: object) -> Tensor:
            return value

        return hook

    return [(input_name(layer, x), keep(cache[input_name(layer, x)].repeat(copies, 1, 1, 1)))
            for x in INPUTS if x not in patched]


def patched_layer(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    cache: ActivationCache,
    inputs: BlockInputs | None,
    layer: int,
    patched: Sequence[str],
    deltas: Float[Tensor, "run batch pos d_model"],
    read: str,
) -> Tensor:
    """Hook `read` of block `layer` (e.g. `attn.hook_z`, `attn.hook_pattern`), one run per delta.

    Run `i` computes the `patched` inputs (q, k, v) of `layer` from the cached residual plus
    `deltas[i]`, and the others from the cached residual (their cached values). With `inputs`
    (`record_block_inputs` of the cached run) the block is called directly on the stacked residual;
    without, the model runs in full with the delta added at `hook_resid_pre`. Returns the read
    tensor of every run stacked along the batch (`[run * batch, ...]`).
    """
    runs, batch = int(deltas.shape[0]), int(tokens.shape[0])
    seen: dict[str, Tensor] = {}

    def capture(x: Tensor, hook: object) -> None:
        seen["x"] = x.detach()

    hooks = _other_inputs_hooks(cache, layer, patched, runs) + [(f"blocks.{layer}.{read}", capture)]
    stacked = deltas.reshape(runs * batch, *deltas.shape[2:])
    with torch.no_grad():
        if inputs is not None:
            resid = cache[resid_pre_name(layer)].repeat(runs, 1, 1) + stacked.to(cache[resid_pre_name(layer)].dtype)
            args, kwargs = inputs.call(layer, resid.shape[0])
            with model.hooks(fwd_hooks=hooks):
                model.blocks[layer](resid, *args, **kwargs)
        else:
            def add(x: Tensor, hook: object) -> Tensor:
                return x + stacked.to(x.dtype)

            model.run_with_hooks(tokens.repeat(runs, 1), fwd_hooks=[(resid_pre_name(layer), add), *hooks])
    return seen["x"]


def block_check(model: TransformerBridge, cache: ActivationCache, inputs: BlockInputs, layers: Sequence[int],
                copies: int) -> bool:
    """Whether calling each of `layers`' blocks directly on its cached input (`copies` stacked)
    reproduces its cached `hook_z` (what `patched_layer` relies on with `inputs`)."""
    rtol = resume_tolerance(model)
    try:
        for layer in layers:
            z = cache[z_name(layer)]
            zero = torch.zeros((copies, *cache[resid_pre_name(layer)].shape), dtype=z.dtype, device=z.device)
            got = patched_layer(model, torch.zeros(z.shape[:2], dtype=torch.long, device=z.device), cache, inputs, layer, INPUTS,
                                zero, "attn.hook_z")
            if not allclose(got, z.repeat(copies, 1, 1, 1), rtol):
                return False
        return True
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError):
        return False


# ---- path patching -------------------------------------------------------------------------------


def _chunks(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def patch_paths(
    model: TransformerBridge,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    paths: Sequence[HeadPath],
    *,
    runs_per_forward: int | None = None,
    resume: bool = True,
    per_prompt: bool = False,
    progress: bool = False,
) -> PathPatchResult:
    """Path patching of each of `paths` from the clean run into the corrupted run (module docstring).

    Args:
        model: A TransformerBridge in eval mode.
        clean_tokens: Tokens of the clean run, the source of the senders' outputs.
        corrupted_tokens: Tokens of the corrupted run, the run that is patched; same shape.
        metric: Logits `[batch, pos, d_vocab]` to a 0-d tensor (or, with `per_prompt`, to `[batch]`).
        paths: The `HeadPath`s to patch, one run each (`all_paths` builds them).
        runs_per_forward: Runs stacked into one forward (default
            `circuits.engine.default_runs_per_forward`).
        resume: Resume inside the receiver's layer when the engine's checks allow (`False`: full
            forwards with hooks, the same numbers).
        per_prompt: Accept a metric returning one value per prompt.
        progress: Show a progress bar.

    Returns:
        `PathPatchResult`: one value per path, in the order of `paths`, and the corrupted baseline.
    """
    require_eval(model)
    if clean_tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean and corrupted tokens must have the same shape, got {tuple(clean_tokens.shape)} "
                         f"and {tuple(corrupted_tokens.shape)}")
    if runs_per_forward is not None and runs_per_forward < 1:
        raise ValueError(f"runs_per_forward must be >= 1, got {runs_per_forward}")
    paths = list(paths)
    for p in paths:
        check_heads(model, [p.sender, p.receiver])
    batch, n_pos = corrupted_tokens.shape
    chunk = runs_per_forward or default_runs_per_forward(model, batch, n_pos)
    senders = sorted({p.sender for p in paths})
    sender_layers = sorted({layer for layer, _ in senders})
    layers = sorted({p.receiver[0] for p in paths})

    with torch.no_grad():
        _, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n in {z_name(l) for l in sender_layers})
    wanted = set(resume_cache_names(model, layers) if resume and paths else [])
    wanted |= {z_name(l) for l in (*sender_layers, *layers)}
    wanted |= {resid_pre_name(l) for l in layers} | {input_name(l, x) for l in layers for x in INPUTS}
    with torch.no_grad(), record_block_inputs(model) as inputs:
        logits, cache = model.run_with_cache(corrupted_tokens, names_filter=lambda name: name in wanted)

    def evaluate(run_logits: Tensor) -> Tensor:
        value = metric(run_logits)
        value = check_per_prompt_value(value, batch) if per_prompt else check_metric_value(value)
        return value.detach().float().cpu()

    baseline = evaluate(logits)
    copies = min(chunk, max(len(paths), 1), 2)
    resumed = bool(paths) and resume and resume_check(model, cache, logits, layers, inputs, copies) \
        and block_check(model, cache, inputs, layers, copies)
    delta = {(l, h): head_outputs((clean[z_name(l)] - cache[z_name(l)])[:, :, h:h + 1],
                                  model.W_O[l][h:h + 1])[:, :, 0] for l, h in senders}

    values = torch.full((len(paths), *baseline.shape), float("nan"), device=baseline.device)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, p in enumerate(paths):
        groups.setdefault((p.receiver[0], p.input), []).append(i)
    bar = progress_bar(total=len(paths), enabled=progress, stage=True, desc="path-patched runs", unit="path")
    for (layer, which), members in sorted(groups.items()):
        group_senders = sorted({paths[i].sender for i in members})
        for sender_chunk in _chunks(group_senders, chunk):
            z_new = patched_layer(model, corrupted_tokens, cache, inputs if resumed else None, layer, (which,),
                                  torch.stack([delta[s] for s in sender_chunk]), "attn.hook_z")
            z_new = z_new.reshape(len(sender_chunk), batch, *z_new.shape[1:])
            index = {s: j for j, s in enumerate(sender_chunk)}
            runs = [i for i in members if paths[i].sender in index]
            for run_chunk in _chunks(runs, chunk):
                receiver_z = [(paths[i].receiver[1], z_new[index[paths[i].sender]]) for i in run_chunk]
                out = _forward(model, corrupted_tokens, cache, inputs, layer, receiver_z, resumed)
                for g, i in enumerate(run_chunk):
                    values[i] = evaluate(out[g * batch:(g + 1) * batch])
                bar.update(len(run_chunk))
    bar.close()
    return PathPatchResult(paths=paths, values=values, baseline=baseline, resumed=resumed)


def _forward(
    model: TransformerBridge,
    tokens: Tensor,
    cache: ActivationCache,
    inputs: BlockInputs,
    layer: int,
    receiver_z: Sequence[tuple[int, Tensor]],
    resumed: bool,
) -> Tensor:
    """Logits of runs giving head `h` of `layer` the z `z[:, :, h]`, one run per `(h, z)`, stacked."""
    copies = len(receiver_z)
    if resumed:
        z_old = cache[z_name(layer)]
        attn = cache[attn_out_name(layer)]
        edited = [attn + head_outputs((z - z_old)[:, :, h:h + 1], model.W_O[layer][h:h + 1])[:, :, 0]
                  for h, z in receiver_z]
        mlp_out = cached_mlp_out(model, cache, layer)
        with torch.no_grad():
            return run_from_attn_out(model, layer, cache[resid_pre_name(layer)].repeat(copies, 1, 1),
                                     torch.cat(edited), None if mlp_out is None else mlp_out.repeat(copies, 1, 1),
                                     inputs)
    batch = tokens.shape[0]

    def edit(z: Tensor, hook: object) -> Tensor:
        z = z.clone()
        for g, (h, new) in enumerate(receiver_z):
            z[g * batch:(g + 1) * batch, :, h] = new[:, :, h]
        return z

    with torch.no_grad():
        return model.run_with_hooks(tokens.repeat(copies, 1), fwd_hooks=[(z_name(layer), edit)])
