"""Test helpers: a hand-built induction model with known heads, builders, and `assert_close`.

The hand-built model is a 2-layer attention-only TL-native transformer with no LayerNorm whose
residual stream has four orthogonal subspaces of one-hot codes:

    tok  [0, V)            the current token (embedding)
    pos  [V, V+N)          the position (positional embedding)
    prev [V+N, 2V+N)       the previous token (written by the previous-token head L0H0)
    out  [2V+N, 3V+N)      what the unembedding reads

Heads (attention logits are `gap` apart, so patterns are near one-hot):
    L0H0 previous-token: query position p matches key position p-1; OV copies tok -> prev.
    L0H1 duplicate-token: query token matches key token, minus a self-match; OV zero.
    L0H2 fixed offset: query position p matches key position p - OFFSET; OV copies tok -> out.
    L0H3 inert: uniform attention, OV zero.
    L1H0 induction: query tok matches key prev (K-composition with L0H0); OV copies tok -> out (+beta).
    L1H1 anti-induction: the same attention; OV copies tok -> out with -beta/2 (suppresses the token
         it attends to: prefix-matching but not copying).
    L1H2 self-copy: attends to its own position; OV copies tok -> out (copying but not prefix-matching).
    L1H3 inert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.checkpoint import boot_native, native_config
from induction.models import ModelInfo

OFFSET = 5


@dataclass(frozen=True)
class Roles:
    previous_token: tuple[int, int] = (0, 0)
    duplicate_token: tuple[int, int] = (0, 1)
    fixed_offset: tuple[int, int] = (0, 2)
    inert0: tuple[int, int] = (0, 3)
    induction: tuple[int, int] = (1, 0)
    anti_induction: tuple[int, int] = (1, 1)
    self_copy: tuple[int, int] = (1, 2)
    inert1: tuple[int, int] = (1, 3)


ROLES = Roles()


def build_induction_model(
    d_vocab: int = 24, n_ctx: int = 48, gap: float = 20.0, beta: float = 8.0, bos_token_id: int | None = 0
) -> TransformerBridge:
    """The hand-built model described in the module docstring, in eval mode."""
    V, N = d_vocab, n_ctx
    d_model = 3 * V + N
    d_head = V + N  # room for the duplicate-token head's token match and self-penalty
    n_heads = 4
    cfg = native_config(
        n_layers=2, d_model=d_model, n_heads=n_heads, n_ctx=N, d_vocab=V, attn_only=True,
        normalization_type=None, seed=0, d_head=d_head,
    )
    model = boot_native(cfg)
    tok = lambda t: t  # noqa: E731  (subspace offsets, for readability)
    pos = lambda p: V + p  # noqa: E731
    prev = lambda t: V + N + t  # noqa: E731
    out = lambda t: 2 * V + N + t  # noqa: E731
    scale = gap * math.sqrt(d_head)

    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for t in range(V):
        sd["embed.weight"][t, tok(t)] = 1.0
        sd["unembed.weight"][t, out(t)] = 1.0
    for p in range(N):
        sd["pos_embed.weight"][p, pos(p)] = 1.0

    def rows(head: int, i: int) -> int:
        return head * d_head + i

    def qk(layer: int, head: int, pairs: list[tuple[int, int, float]]) -> None:
        """pairs of (query dim, key dim, weight): score += weight * x_q[qdim] * x_k[kdim] * scale."""
        for i, (qd, kd, w) in enumerate(pairs):
            sd[f"blocks.{layer}.attn.q.weight"][rows(head, i), qd] = w * scale
            sd[f"blocks.{layer}.attn.k.weight"][rows(head, i), kd] = 1.0

    def ov(layer: int, head: int, src: callable, dst: callable, weight: float) -> None:
        for t in range(V):
            sd[f"blocks.{layer}.attn.v.weight"][rows(head, t), src(t)] = 1.0
            sd[f"blocks.{layer}.attn.o.weight"][dst(t), rows(head, t)] = weight

    # L0H0 previous-token: q at position p, k at position p-1.
    qk(0, 0, [(pos(p), pos(p - 1), 1.0) for p in range(1, N)])
    ov(0, 0, tok, prev, 1.0)
    # L0H1 duplicate-token: same token, but not itself.
    qk(0, 1, [(tok(t), tok(t), 1.0) for t in range(V)] + [(pos(p), pos(p), -1.0) for p in range(N)])
    # L0H2 fixed offset.
    qk(0, 2, [(pos(p), pos(p - OFFSET), 1.0) for p in range(OFFSET, N)])
    ov(0, 2, tok, out, 1.0)
    # L1H0 induction and L1H1 anti-induction: query token == key's previous token.
    qk(1, 0, [(tok(t), prev(t), 1.0) for t in range(V)])
    ov(1, 0, tok, out, beta)
    qk(1, 1, [(tok(t), prev(t), 1.0) for t in range(V)])
    ov(1, 1, tok, out, -beta / 2)
    # L1H2 self-copy.
    qk(1, 2, [(pos(p), pos(p), 1.0) for p in range(N)])
    ov(1, 2, tok, out, 1.0)

    model.load_state_dict(sd)
    model.induction_info = ModelInfo(spec="<hand-built>", kind="memory", bos_token_id=bos_token_id)
    return model.eval()


def assert_close(actual, expected, atol: float = 1e-5, rtol: float = 1e-5, msg: str = "") -> None:
    """torch.testing.assert_close with a message prefix; accepts floats, lists, tensors."""
    actual_t = torch.as_tensor(actual, dtype=torch.float64)
    expected_t = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual_t, expected_t, atol=atol, rtol=rtol, msg=lambda m: f"{msg}\n{m}")


def save_tiny_hf_gpt2(path, vocab: int = 60, n_ctx: int = 64, seed: int = 0, with_tokenizer: bool = True):
    """A tiny randomly initialised Hugging Face GPT-2 (and a word-level tokenizer) saved to `path`.

    Returns the transformers model in eval mode, for comparisons. Nothing is downloaded.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=vocab, n_positions=n_ctx, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(path)
    if with_tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        words = ["<|endoftext|>"] + [f"w{i}" for i in range(vocab - 1)]
        tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
        tk.pre_tokenizer = pre_tokenizers.Whitespace()
        special = "<|endoftext|>"
        PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=special, eos_token=special, unk_token=special).save_pretrained(path)
    return model


class LargestTensor:
    """Records the largest tensor (in elements) any torch operation returns while active.

    A context manager over `TorchDispatchMode`, so it sees every intermediate of a computation,
    including the ones the code under test never names (`with LargestTensor() as probe: ...; probe.numel`).
    """

    def __init__(self) -> None:
        self.numel = 0
        self.shape: tuple[int, ...] = ()
        self._mode = None

    def __enter__(self) -> "LargestTensor":
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        probe = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.numel() > probe.numel:
                        probe.numel, probe.shape = t.numel(), tuple(t.shape)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
