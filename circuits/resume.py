"""Running the rest of a model from inside a layer, exactly as its own forward would (`circuits.engine`).

Blocks of Hugging Face models need more than the residual: the model's own forward hands every
layer its rotary tables (`position_embeddings=(cos, sin)`: Llama, GPT-NeoX), attention masks and
position ids. `record_block_inputs` records what each block received on a cached run, and the
resumed blocks get the same (`BlockInputs`: key/value caches dropped, batch-sized tensors repeated
for the runs stacked along the batch), so RoPE, sliding windows and masks are applied exactly as in
the model's forward. Parallel blocks (GPT-NeoX / Pythia, GPT-J: attention and MLP both read the
block input) are finished from the cached MLP output. `resume_check` verifies on the cached run that
the shortcut reproduces the model, to a tolerance set by its dtype (`resume_tolerance`).
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components.block import ParallelBlockBridge

from circuits.hooks import (
    FINAL_RESID,
    FLOAT32_TOLERANCE,
    allclose,
    attn_out_name,
    head_outputs,
    mlp_out_name,
    resid_pre_name,
    z_name,
)


def _is_kv_cache(value: object) -> bool:
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # transformers is optional for native bridges
        return False
    return isinstance(value, Cache)


def _recorded(value: Any) -> Any:
    """A block argument as replayed: key/value caches dropped (replaying one would append to it)."""
    if _is_kv_cache(value):
        return None
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_recorded(v) for v in value)
    return value


def _repeat_batch(value: Any, batch: int, copies: int) -> Any:
    """`value` with batch-sized tensors (2-D or more, first axis `batch` > 1) repeated `copies`
    times along it, run-major like the stacked residual; anything else unchanged (it broadcasts)."""
    if copies == 1 or batch < 2:
        return value
    if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == batch:
        return value.repeat(copies, *([1] * (value.ndim - 1)))
    if isinstance(value, tuple):
        return tuple(_repeat_batch(v, batch, copies) for v in value)
    return value


@dataclass
class BlockInputs:
    """What each block received besides the residual on one forward (`record_block_inputs`).

    Attributes:
        batch: the recorded forward's batch size.
        calls: layer -> (positional arguments after the residual, keyword arguments), key/value
            caches replaced by None and `use_cache` off.
    """

    batch: int = 0
    calls: dict[int, tuple[tuple, dict[str, Any]]] = field(default_factory=dict)

    def call(self, layer: int, batch: int) -> tuple[tuple, dict[str, Any]]:
        """Block `layer`'s arguments for a forward of `batch` rows (a multiple of the recorded batch)."""
        if layer not in self.calls:
            return (), {}
        args, kwargs = self.calls[layer]
        if batch % max(self.batch, 1):
            raise ValueError(f"a resumed batch of {batch} rows does not stack the recorded batch of {self.batch}")
        copies = batch // max(self.batch, 1)
        return (
            tuple(_repeat_batch(a, self.batch, copies) for a in args),
            {k: _repeat_batch(v, self.batch, copies) for k, v in kwargs.items()},
        )


@contextlib.contextmanager
def record_block_inputs(model: TransformerBridge) -> Iterator[BlockInputs]:
    """Record, during the forward run inside the context, what each block is called with."""
    inputs = BlockInputs()

    def recorder(layer: int) -> Callable:
        def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            if args:
                resid, rest = args[0], args[1:]
            elif "hidden_states" in kwargs:
                resid, rest = kwargs["hidden_states"], ()
            else:  # nothing to replay; `resume_check` decides whether the residual alone will do
                return
            inputs.batch = int(resid.shape[0])
            kept = {k: _recorded(v) for k, v in kwargs.items() if k != "hidden_states" or args}
            if "use_cache" in kept:
                kept["use_cache"] = False
            inputs.calls[layer] = (tuple(_recorded(a) for a in rest), kept)

        return pre_hook

    handles = [
        block.register_forward_pre_hook(recorder(layer), with_kwargs=True)
        for layer, block in enumerate(model.blocks)
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def _block_output(output: Tensor | tuple) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def run_from_resid_pre(
    model: TransformerBridge,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    inputs: BlockInputs | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of the model resumed at block `layer` from the residual stream entering it.

    Calls `blocks[layer:]`, `ln_final` and `unembed` directly (their hooks fire as in a full
    forward), handing each block what it received on the recorded forward (`inputs`: rotary
    tables, masks, position ids); without `inputs` the blocks get the residual alone, which is
    enough for native bridges and GPT-2/Neo-style blocks but skips RoPE. `resume_check` verifies
    the result on a cached run before the engine relies on it.
    """
    inputs = inputs or BlockInputs()
    x = resid
    for index in range(layer, int(model.cfg.n_layers)):
        args, kwargs = inputs.call(index, x.shape[0])
        x = _block_output(model.blocks[index](x, *args, **kwargs))
    return model.unembed(model.ln_final(x))


def is_parallel(model: TransformerBridge, layer: int) -> bool:
    """Whether block `layer`'s MLP reads the block input rather than the residual after attention
    (parallel attention and MLP: GPT-NeoX/Pythia, GPT-J)."""
    return isinstance(model.blocks[layer], ParallelBlockBridge) or bool(
        getattr(model.cfg, "parallel_attn_mlp", False)
    )


def finish_block(
    model: TransformerBridge,
    layer: int,
    resid_pre: Float[Tensor, "batch pos d_model"],
    attn_out: Float[Tensor, "batch pos d_model"],
    mlp_out: Float[Tensor, "batch pos d_model"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """The residual leaving block `layer`, given its input and its attention output.

    Sequential (pre-norm) blocks: `mid + mlp(ln2(mid))` with `mid = resid_pre + attn_out`;
    attention-only blocks: `mid`. Parallel blocks: `resid_pre + attn_out + mlp(ln2(resid_pre))`,
    where the MLP term does not depend on the attention output, so `mlp_out` (the cached
    `hook_mlp_out`) is used when given instead of recomputing it.
    """
    block = model.blocks[layer]
    if not hasattr(block, "mlp"):
        return resid_pre + attn_out
    if is_parallel(model, layer):
        if mlp_out is None:
            mlp_out = block.mlp(block.ln2(resid_pre) if hasattr(block, "ln2") else resid_pre)
        return resid_pre + attn_out + mlp_out
    mid = resid_pre + attn_out
    return mid + block.mlp(block.ln2(mid) if hasattr(block, "ln2") else mid)


def run_from_attn_out(
    model: TransformerBridge,
    layer: int,
    resid_pre: Float[Tensor, "batch pos d_model"],
    attn_out: Float[Tensor, "batch pos d_model"],
    mlp_out: Float[Tensor, "batch pos d_model"] | None = None,
    inputs: BlockInputs | None = None,
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of the model resumed inside block `layer`, after its attention (`finish_block`,
    then `run_from_resid_pre` from the next block)."""
    resid = finish_block(model, layer, resid_pre, attn_out, mlp_out)
    if layer + 1 < int(model.cfg.n_layers):
        return run_from_resid_pre(model, resid, layer + 1, inputs)
    return model.unembed(model.ln_final(resid))


def resume_cache_names(model: TransformerBridge, layers: Sequence[int]) -> list[str]:
    """Hooks `resume_check` and the resumed runs need from the unintervened run."""
    n_layers = int(model.cfg.n_layers)
    names = {FINAL_RESID}
    for layer in layers:
        names |= {z_name(layer), resid_pre_name(layer), attn_out_name(layer)}
        if layer + 1 < n_layers:
            names.add(resid_pre_name(layer + 1))
        if is_parallel(model, layer) and hasattr(model.blocks[layer], "mlp"):
            names.add(mlp_out_name(layer))
    return sorted(names)


def cached_mlp_out(model: TransformerBridge, cache: ActivationCache, layer: int) -> Tensor | None:
    """The cached MLP output where `finish_block` uses it (parallel blocks), else None."""
    name = mlp_out_name(layer)
    return cache[name] if is_parallel(model, layer) and name in cache else None


_EPS_FACTOR = 16


"""Self-check tolerance in units of the model dtype's machine epsilon (`resume_tolerance`)."""


def resume_tolerance(model: TransformerBridge) -> float:
    """Relative tolerance of `resume_check`: 1e-4 in float32, `_EPS_FACTOR` epsilons in lower
    precision (0.125 in bfloat16, 0.0156 in float16).

    The model's forward and the shortcut round differently (`sum_h z_h W_O[h]` per head is not
    the attention's one matmul; a parallel block's three terms are summed in another order). On
    the tiny test models of every family in bfloat16 the worst of the three checks was one
    epsilon relative to the checked tensor's size (NeoX's parallel block), against 1e-7 in
    float32, so a fixed float32 tolerance sent every bfloat16 sweep to full forwards.
    """
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return max(FLOAT32_TOLERANCE, _EPS_FACTOR * torch.finfo(dtype).eps)


def resume_check(
    model: TransformerBridge,
    cache: ActivationCache,
    logits: Float[Tensor, "batch pos d_vocab"],
    layers: Sequence[int],
    inputs: BlockInputs | None = None,
    copies: int = 1,
) -> bool:
    """Whether resuming inside `layers` reproduces the model, checked on a cached run.

    Three checks, all on the unintervened run, to `resume_tolerance(model)`: `hook_attn_out`
    equals `sum_h z_h W_O[h]` plus a constant (so a change of z moves the attention output by
    `delta_z W_O`, no post-attention norm); `finish_block` reproduces the next block's input; and
    the resumed run from the lowest layer, with `copies` copies of the batch stacked as the
    engine stacks runs and the recorded block `inputs`, reproduces the logits (blocks, final norm
    and unembedding as in the model's own forward).
    """
    n_layers = int(model.cfg.n_layers)
    rtol = resume_tolerance(model)
    try:
        with torch.no_grad():
            for layer in layers:
                z = cache[z_name(layer)]
                attn_out = cache[attn_out_name(layer)]
                rest = attn_out.float() - head_outputs(z.float(), model.W_O[layer].float()).sum(dim=-2)
                if not allclose(rest, rest[:1, :1].expand_as(rest), rtol):
                    return False
                following = (
                    cache[resid_pre_name(layer + 1)] if layer + 1 < n_layers else cache[FINAL_RESID]
                )
                after = finish_block(
                    model, layer, cache[resid_pre_name(layer)], attn_out, cached_mlp_out(model, cache, layer)
                )
                if not allclose(after, following, rtol):
                    return False
            lowest = min(layers)
            mlp_out = cached_mlp_out(model, cache, lowest)
            resumed = run_from_attn_out(
                model,
                lowest,
                cache[resid_pre_name(lowest)].repeat(copies, 1, 1),
                cache[attn_out_name(lowest)].repeat(copies, 1, 1),
                None if mlp_out is None else mlp_out.repeat(copies, 1, 1),
                inputs,
            )
            return allclose(resumed, logits.repeat(copies, 1, 1), rtol)
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError):
        # A block whose inputs cannot be replayed cannot be resumed.
        return False
