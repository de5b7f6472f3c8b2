"""Test helpers: a hand-built induction model with known heads, builders, and `assert_close`.

The hand-built model (built by `induction.handbuilt`, which holds the general builder) is a 2-layer
attention-only TL-native transformer with no LayerNorm whose residual stream has four orthogonal
subspaces of one-hot codes:

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

from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.handbuilt import HandBuiltSpec, build_handbuilt
from induction.handbuilt import HeadRole as R

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
    """The hand-built model described in the module docstring, in eval mode (`induction.handbuilt`)."""
    layers = (
        (R("previous_token"), R("duplicate_token"), R("fixed_offset", lag=OFFSET), R("inert")),
        (R("induction", weight=beta), R("anti_induction", weight=-beta / 2), R("self_copy"), R("inert")),
    )
    spec = HandBuiltSpec(layers=layers, d_vocab=d_vocab, n_ctx=n_ctx, gap=gap, bos_token_id=bos_token_id,
                         bos_fallback=False)
    return build_handbuilt(spec)


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
