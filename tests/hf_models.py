"""Tiny random Hugging Face models of every common family, with a word-level tokenizer built locally.

Nothing is downloaded: each builder makes a transformers config, a randomly initialised
``*ForCausalLM`` and a word-level fast tokenizer (`tokenizers`), and saves both with
``save_pretrained`` to a directory that `induction.load_model` (`TransformerBridge.boot_transformers`)
loads offline.

Families (2 layers, 4 heads, d_model 64, context 128, vocabulary = the tokenizer's, ~400 words):
- ``gpt2``   learned positions, LayerNorm, sequential blocks, tied unembedding.
- ``neox``   Pythia-style: partial rotary (a quarter of each head's dimensions), parallel attention
             and MLP (``use_parallel_residual``), untied unembedding.
- ``llama``  RoPE, RMSNorm, gated SiLU MLP, grouped-query attention (2 key/value heads for 4 query
             heads); its tokenizer prepends BOS, like Llama's.
- ``neo``    GPT-Neo: learned positions, a global and a local (windowed) attention layer; its
             attention is computed inside the Hugging Face module, which discards `hook_pattern` edits.

The weights are drawn with ``initializer_range`` 0.2 (transformers' default is 0.02): at the default
the attention of a random model is nearly uniform and every head's causal effect is below 1e-3, too
small to tell a right number from a wrong one.

The tokenizer (`build_tokenizer`) knows every word of `ENGLISH_TEXT` (a short English text for
``--text``) and of the shipped text tasks and control words (`induction/datasets/*.json`), so a
few-shot prompt never contains the unknown token; ``task_words=False`` builds one that lacks the
task words (the unknown-token tests). Ids 0-2 are ``<|endoftext|>`` (BOS = EOS), ``<unk>``, ``<pad>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FAMILIES = ("gpt2", "neox", "llama", "neo")
SPECIALS = ("<|endoftext|>", "<unk>", "<pad>")
BOS, UNK, PAD = 0, 1, 2
INIT_RANGE = 0.2
DATASETS = Path(__file__).resolve().parent.parent / "induction" / "inputs" / "datasets"

ENGLISH_TEXT = """\
The old man walked along the river every morning. He liked the quiet water and the birds that sang in the
trees. One day he saw a small boat near the bank. The boat was empty, and the water moved it slowly toward
the bridge. The old man called out, but nobody answered. He walked to the bridge and waited. When the boat
came close, he took the rope and pulled it to the shore. Inside the boat he found a red box. The box was
closed, and it was heavy. He carried the box home and put it on the table. His wife looked at the box and
asked where it came from. He told her about the river, the boat and the bridge. They opened the box
together. Inside there was a letter and a book. The letter said that the book belonged to a girl who lived
in the town across the river. The next morning the old man walked across the bridge with the book. He asked
people in the town about the girl. A woman in a shop said that the girl lived in the house with the green
door. The old man found the house with the green door and knocked. A girl opened the door and looked at the
book. She smiled and said that she had lost the book a week ago, when her boat went down the river. She
thanked the old man and asked him to come inside. They talked for a long time about the river, the birds
and the town. When the old man walked home across the bridge, the sun was low and the water was gold. His
wife asked him about the girl, and he told her the whole story. After that day the old man and his wife
visited the girl every week, and they walked along the river together in the morning.
"""


def dataset_words() -> list[str]:
    """Every word of the shipped text tasks and control words, in file order."""
    words: list[str] = []
    for name in ("antonyms", "country_capital", "word_category"):
        for x, y in json.loads((DATASETS / f"{name}.json").read_text())["pairs"]:
            words += [*x.split(), *y.split()]
    controls = json.loads((DATASETS / "control_words.json").read_text())
    return words + controls["unrelated_labels"] + controls["random_inputs"]


def _pre_tokens(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [piece for piece, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]


def tokenizer_vocab(task_words: bool = True) -> dict[str, int]:
    """The word-level vocabulary: the specials, then every word of `ENGLISH_TEXT`, the task format
    (``->``) and, with `task_words`, every word of the shipped tasks, each once, in order of appearance."""
    pieces = _pre_tokens(ENGLISH_TEXT) + ["->", ":", "?"]
    if task_words:
        pieces += dataset_words()
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def build_tokenizer(path: str | os.PathLike[str], prepend_bos: bool = False, task_words: bool = True):
    """A word-level fast tokenizer over `tokenizer_vocab(task_words)`, saved to `path`; returns it.

    A word outside the vocabulary is ``<unk>`` (id 1). `prepend_bos` adds a post-processor that
    puts BOS first (Llama's convention; GPT-2, Pythia and GPT-Neo do not).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(tokenizer_vocab(task_words), unk_token=SPECIALS[UNK]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = SPECIALS[BOS]
    if prepend_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, BOS)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=bos, eos_token=bos, unk_token=SPECIALS[UNK], pad_token=SPECIALS[PAD]
    )
    fast.save_pretrained(path)
    return fast


def _hf_config(family: str, n_layers: int, d_model: int, n_heads: int, n_ctx: int, vocab: int):
    from transformers import GPT2Config, GPTNeoConfig, GPTNeoXConfig, LlamaConfig

    ids = dict(vocab_size=vocab, bos_token_id=BOS, eos_token_id=BOS, pad_token_id=PAD, initializer_range=INIT_RANGE)
    if family == "gpt2":
        return GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=n_ctx, **ids)
    if family == "neox":
        # transformers 5 keeps rotary_pct as rope_parameters["partial_rotary_factor"].
        return GPTNeoXConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
            intermediate_size=4 * d_model, max_position_embeddings=n_ctx, rotary_pct=0.25,
            use_parallel_residual=True, tie_word_embeddings=False, **ids,
        )
    if family == "llama":
        return LlamaConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
            num_key_value_heads=max(1, n_heads // 2), intermediate_size=2 * d_model,
            max_position_embeddings=n_ctx, tie_word_embeddings=False, **ids,
        )
    if family == "neo":
        kinds = (["global", "local"] * n_layers)[:n_layers]
        return GPTNeoConfig(
            num_layers=n_layers, hidden_size=d_model, num_heads=n_heads, max_position_embeddings=n_ctx,
            attention_types=[[[kind], 1] for kind in kinds], window_size=16, intermediate_size=4 * d_model, **ids,
        )
    raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")


def build_hf_model(
    family: str,
    path: str | os.PathLike[str],
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_ctx: int = 128,
    seed: int = 0,
    tokenizer: bool = True,
    task_words: bool = True,
) -> torch.nn.Module:
    """Save a random `family` model (and its tokenizer, unless `tokenizer=False`) to `path`.

    Returns the transformers model in eval mode, for comparisons with the bridge.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if tokenizer:
        build_tokenizer(path, prepend_bos=family == "llama", task_words=task_words)
    torch.manual_seed(seed)
    cfg = _hf_config(family, n_layers, d_model, n_heads, n_ctx, len(tokenizer_vocab(task_words)))
    # Eager attention is what the bridge runs, so the returned model computes the same numbers.
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" would land in the CLI tests' stderr
    try:
        model.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model


class FamilyDirs:
    """`dirs[family]`: that family's model directory, built on first use (one per session)."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, family: str) -> Path:
        if family not in self._built:
            path = self.root / family
            build_hf_model(family, path)
            self._built[family] = path
        return self._built[family]
