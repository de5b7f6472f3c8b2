"""Small models for the `circuits` tests, built offline, and checks that they are what we think.

The other `test_circuits_*` modules import the builders from here (tests/helpers.py belongs to
the whole repository; these are specific to the causal tools).
"""

import functools
import tempfile

import pytest
import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

D_VOCAB = 50


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread while a test runs: these models are tiny, and on a shared 2-core
    machine two threads waiting for each other made forwards ~100x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def native_model(
    *,
    ln_mlp: bool = False,
    n_layers: int = 2,
    n_heads: int = 4,
    d_model: int = 64,
    seed: int = 0,
    init_range: float = 0.3,
) -> TransformerBridge:
    """A native bridge: attention-only without LayerNorm, or GPT-2 style (LN, GELU MLP).

    `init_range` is larger than the default (0.8 / sqrt(d_model)) so that attention patterns are
    far from uniform and heads differ: with the default, most interventions move the metric by
    less than the tolerances that would distinguish them.
    """
    style = (
        dict(attn_only=False, normalization_type="LN", act_fn="gelu")
        if ln_mlp
        else dict(attn_only=True, normalization_type=None)
    )
    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_layers=n_layers,
        n_ctx=64,
        d_vocab=D_VOCAB,
        seed=seed,
        initializer_range=init_range,
        **style,
    )
    return TransformerBridge.boot_native(cfg).eval()


@functools.cache
def _tokenizer_dir() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({f"t{i}": i for i in range(D_VOCAB)}, unk_token="t0"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    special = dict(unk_token="t0", bos_token="t0", eos_token="t0", pad_token="t0")
    directory = tempfile.mkdtemp(prefix="circuits-tokenizer-")
    PreTrainedTokenizerFast(tokenizer_object=word_level, **special).save_pretrained(directory)
    return directory


def hf_model(kind: str = "gpt2", seed: int = 0) -> tuple[TransformerBridge, torch.nn.Module]:
    """A bridge over a randomly initialised Hugging Face model (no download), and that model.

    `gpt2`: its attention is re-implemented by the bridge (JointQKVAttentionBridge), so
    `hook_pattern` edits take effect. `neo` (GPT-Neo): attention is delegated to the HF module,
    which discards `hook_pattern` edits.
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoConfig,
        GPTNeoForCausalLM,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=64,
            vocab_size=D_VOCAB,
            attn_implementation="eager",
        )
        hf, name = GPT2LMHeadModel(config), "gpt2"
    elif kind == "neo":
        config = GPTNeoConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global"], 2]],
            max_position_embeddings=64,
            vocab_size=D_VOCAB,
            attn_implementation="eager",
        )
        hf, name = GPTNeoForCausalLM(config), "EleutherAI/gpt-neo-125M"
    else:
        raise ValueError(f"kind must be gpt2 or neo, got {kind!r}")
    hf = hf.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(_tokenizer_dir())
    bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tokenizer)
    return bridge.eval(), hf


def tokens(batch: int = 4, pos: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, D_VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    """A typical metric: mean logit difference of two tokens at the last position."""
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


def next_token_logprob(toks: torch.Tensor):
    """Mean log-probability of the actual next tokens (nonlinear in everything)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        logprobs = logits[:, :-1].log_softmax(-1)
        return logprobs.gather(-1, toks[:, 1:, None]).mean()

    return metric


@pytest.mark.parametrize("kind", ["gpt2", "neo"])
def test_hf_bridges_reproduce_their_models(kind):
    bridge, hf = hf_model(kind)
    toks = tokens()
    with torch.no_grad():
        assert torch.allclose(bridge(toks), hf(toks).logits, atol=1e-5)


def test_init_range_sharpens_attention():
    """The builders' premise: at the default init, layer-1 attention is nearly uniform (no key
    gets 0.3 of the weight over 12 positions); at init_range=0.3 it is not."""
    toks = tokens()
    for model, wanted in ((native_model(init_range=0.8 / 8), False), (native_model(), True)):
        with torch.no_grad():
            _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_pattern"))
        pattern = cache["blocks.1.attn.hook_pattern"][:, :, -1]  # [batch, head, key_pos]
        sharp = bool((pattern.max(-1).values > 0.3).any())
        assert sharp == wanted
