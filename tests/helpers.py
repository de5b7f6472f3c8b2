"""Test helpers: a hand-built induction model with known heads, builders, and `assert_close`.

The hand-built model (built by `induction.bench.handbuilt`, which holds the general builder) is a 2-layer
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

import math
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
from induction.bench.handbuilt import HeadRole as R
from induction.loading.native import boot_native, native_config

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
    """The hand-built model described in the module docstring, in eval mode (`induction.bench.handbuilt`)."""
    layers = (
        (R("previous_token"), R("duplicate_token"), R("fixed_offset", lag=OFFSET), R("inert")),
        (R("induction", weight=beta), R("anti_induction", weight=-beta / 2), R("self_copy"), R("inert")),
    )
    spec = HandBuiltSpec(layers=layers, d_vocab=d_vocab, n_ctx=n_ctx, gap=gap, bos_token_id=bos_token_id,
                         bos_fallback=False)
    return build_handbuilt(spec)


def build_redundant_induction_model(weight: float = 8.0, n_induction: int = 2, d_vocab: int = 24,
                                    n_ctx: int = 48) -> TransformerBridge:
    """A previous-token head L0H0, `n_induction` identical induction heads L1H0.. (OV weight `weight`
    each; 0: they attend as induction heads but write nothing), a self-copy head after them in layer
    1 (L1H2 for two), the other heads inert.

    Either of two induction heads alone predicts the repeated token almost as well as both (weight
    8: logit 8 vs 16 against 23 others), so ablating one moves the ICL score far less than ablating
    both: the redundancy that single-head ablation cannot see.
    """
    layer1 = [R("induction", weight=weight)] * n_induction + [R("self_copy")]
    layer1 += [R("inert")] * (4 - len(layer1))
    layers = ((R("previous_token"), R("inert"), R("inert"), R("inert")), tuple(layer1))
    return build_handbuilt(HandBuiltSpec(layers=layers, d_vocab=d_vocab, n_ctx=n_ctx, bos_fallback=False))


def save_redundant_induction_folder(path, weights: dict[int, float], n_induction: int = 2):
    """A folder of revision directories (``step1/``, ``step10/``, ...) for `induction track`, step ->
    `build_redundant_induction_model(weight, n_induction)`: induction heads that grow over "training"."""
    from pathlib import Path

    from induction.loading.native import save_checkpoint

    path = Path(path)
    for step, weight in weights.items():
        save_checkpoint(build_redundant_induction_model(weight, n_induction), path / f"step{step}", {"bos_token_id": 0})
    return path


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


# ---- a hand-built task-inference model whose function vector is known ---------------------------------

TASK_MOVER = (1, 0)  # the one head that carries the task from the demonstrations to the query


def build_task_vector_model(data, gap: float = 20.0, beta: float = 20.0, sharpness: float = 10.0) -> TransformerBridge:
    """A 2-layer TL-native model with MLPs (no LayerNorm) that performs the tasks of `data`
    (`induction.inputs.stream_configs.TasksDataConfig`) by the circuit Todd et al. describe, built by hand.

    Residual subspaces of one-hot codes: tok [0, V), pos [V, V+N), prev [V+N, 2V+N) (the previous
    token), task [2V+N, 2V+N+T) (which task), out [2V+N+T, 3V+N+T) (read by the unembedding), and
    one constant dimension, 1 at every position.
    - L0H0 previous-token head: copies the previous token into `prev`. L0H1, L1H1 are inert.
    - MLP0: at a label position y whose previous token is an input x with y = f_t(x), writes task t
      (one unit per (t, x), firing only when both codes are present).
    - L1H0, the task mover: attends from every position to the positions holding a task code
      (uniformly over a prompt's demonstrations; to BOS, which holds nothing, when there are none)
      and copies the task code: its output at the query is exactly task t's code on a clean prompt.
    - MLP1: writes `beta` on out(f_t(x)) where the residual holds task t and the token x.
    So with the task code at the query (from the mover or added as a vector) the model answers
    f_t(x); without it every logit is 0. The function vector of L1H0 is task t's code.
    """
    from induction.loading.models import ModelInfo

    V, N, T = data.d_vocab, data.seq_len, len(data.tasks)
    vocab = data.vocab
    tok = lambda t: t  # noqa: E731
    pos = lambda p: V + p  # noqa: E731
    prev = lambda t: V + N + t  # noqa: E731
    task = lambda i: 2 * V + N + i  # noqa: E731
    out = lambda t: 2 * V + N + T + t  # noqa: E731
    const = 3 * V + N + T
    d_model, d_head, n_heads = const + 1, max(V, N), 2
    d_mlp = T * len(vocab.inputs)
    cfg = native_config(n_layers=2, d_model=d_model, n_heads=n_heads, n_ctx=N, d_vocab=V, attn_only=False,
                        normalization_type=None, seed=0, d_head=d_head, d_mlp=d_mlp)
    model = boot_native(cfg)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    scale = gap * math.sqrt(d_head)
    for t in range(V):
        sd["embed.weight"][t, tok(t)] = 1.0
        sd["unembed.weight"][t, out(t)] = 1.0
    for p in range(N):
        sd["pos_embed.weight"][p, pos(p)] = 1.0
        sd["pos_embed.weight"][p, const] = 1.0

    def row(head: int, i: int) -> int:
        return head * d_head + i

    # L0H0 previous-token: query position p matches key position p-1; OV tok -> prev.
    for p in range(1, N):
        sd["blocks.0.attn.q.weight"][row(0, p), pos(p)] = scale
        sd["blocks.0.attn.k.weight"][row(0, p), pos(p - 1)] = 1.0
    for t in range(V):
        sd["blocks.0.attn.v.weight"][row(0, t), tok(t)] = 1.0
        sd["blocks.0.attn.o.weight"][prev(t), row(0, t)] = 1.0
    # L1H0 task mover: keys with a task code score 1, BOS 0.5, the rest 0; OV task -> task.
    for i in range(T):
        sd["blocks.1.attn.q.weight"][row(0, i), const] = scale
        sd["blocks.1.attn.k.weight"][row(0, i), task(i)] = 1.0
        sd["blocks.1.attn.v.weight"][row(0, i), task(i)] = 1.0
        sd["blocks.1.attn.o.weight"][task(i), row(0, i)] = 1.0
    sd["blocks.1.attn.q.weight"][row(0, T), const] = scale
    sd["blocks.1.attn.k.weight"][row(0, T), tok(vocab.bos)] = 0.5
    # MLPs: unit (t, x) fires (pre-activation +sharpness/2) only when both of its codes are present.
    fire = torch.nn.functional.gelu(torch.tensor(sharpness / 2)).item()
    for i, name in enumerate(data.tasks):
        for j, x in enumerate(vocab.inputs):
            unit, y = i * len(vocab.inputs) + j, vocab.apply(name, x)
            sd["blocks.0.mlp.in.weight"][unit, tok(y)] = sharpness
            sd["blocks.0.mlp.in.weight"][unit, prev(x)] = sharpness
            sd["blocks.0.mlp.in.bias"][unit] = -1.5 * sharpness
            sd["blocks.0.mlp.out.weight"][task(i), unit] = 1.0 / fire
            sd["blocks.1.mlp.in.weight"][unit, task(i)] = sharpness
            sd["blocks.1.mlp.in.weight"][unit, tok(x)] = sharpness
            sd["blocks.1.mlp.in.bias"][unit] = -1.5 * sharpness
            sd["blocks.1.mlp.out.weight"][out(y), unit] = beta / fire
    model.load_state_dict(sd)
    model.induction_info = ModelInfo(spec="<hand-built tasks>", kind="memory", bos_token_id=data.bos_token_id,
                                     data=data.to_dict())
    return model.eval()


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


# ---- shared by the few-shot, device and GPU tests -------------------------------------------------

def fewshot_hand_data():
    """The few-shot layout the hand-built induction model is evaluated on (`FewShotDataConfig`)."""
    from induction.inputs.stream_configs import FewShotDataConfig

    return FewShotDataConfig(d_vocab=24, seq_len=48, n_unrelated=7, rule_size=3, n_classes=2,
                             exemplars_per_class=2, n_way=2)


def build_fewshot_hand_model() -> TransformerBridge:
    """`build_induction_model()` labelled with `fewshot_hand_data()`, so few-shot jobs find their layout."""
    from induction.loading.models import ModelInfo

    model = build_induction_model()
    model.induction_info = ModelInfo(spec="<hand-built>", kind="memory", bos_token_id=0,
                                     data=fewshot_hand_data().resolved().to_dict())
    return model


class CallCounter:
    """Wraps `module.name` (monkeypatched) and counts its calls; `fail_on`: the call that raises
    KeyboardInterrupt instead (a user stopping a long job)."""

    def __init__(self, monkeypatch, module, name: str = "score_heads", fail_on: int | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on
        self.real = getattr(module, name)
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


def cli(capsys, *argv):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    from induction.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, *needles):
    """A failure said in one line on stderr (no traceback) that contains every needle."""
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
