"""Hand-built transformers with known heads: every weight set by hand in one-hot subspaces.

A model is a list of layers, each a list of `HeadRole`s. The residual stream is a sum of orthogonal
subspaces of one-hot codes, allocated in this order:

    tok    [V]   the current token (the embedding)
    pos    [N]   the position (the positional embedding)
    lag c  [V]   tok[p - c], written by the offset head(s) attending c back (c = 1: previous-token)
    out    [V]   what the unembedding reads
    const  [1]   a constant (positional embedding), when a sink head or LayerNorm needs it
    sink   [1]   what attention-sink heads write (nothing reads it)
    mlp l  [V]   what block l's MLP writes (LayerNorm + MLP models; nothing reads it)

Heads (attention logits are `gap` apart, so patterns are near one-hot; with `bos_fallback`, a head
whose query finds no match attends BOS, whose embedding is zero, at half the gap: a no-op, as in
trained models, instead of spreading its attention over the context):
- previous_token / offset (lag c): query position p matches key p - c; OV copies tok -> lag c.
- duplicate_token: query token matches key token, minus a self-match; OV zero.
- fixed_offset (lag c): attends p - c; OV copies tok -> out (a head that predicts tok[p - c]).
- induction / shifted_induction / anti_induction (query_lag c_Q, key_lag c_K): the query's
  lag-c_Q code matches the key's lag-c_K code (lag 0 = tok), so the head attends k = j + d after an
  earlier occurrence j of the current token, d = c_K - c_Q; OV copies the lag-(d - 1) code (tok[j + 1])
  -> out with `weight` (negative for anti-induction: it suppresses the token induction predicts).
  Canonical induction is c_Q = 0, c_K = 1.
- copy_suppression: the query's out code (what the layers below predict) matches the key's token, so
  the head attends earlier copies of the predicted token; OV copies tok -> out with a negative weight.
- self_copy: attends its own position; OV copies tok -> out.
- attention_sink: attends position 0 (BOS) from everywhere; OV writes the constant into `sink`.
- inert: zero weights (uniform attention, no output).

LayerNorm + MLP variant (`HandBuiltSpec.ln_mlp`): pre-norm blocks with LayerNorm and a GELU MLP.
A constant direction of size `const` (like the massive activations of real models) dominates each
residual's norm, so every LayerNorm's scale stays near one value, which the LayerNorm weight then
undoes (calibrated on the model's own stream): each norm is close to "subtract the mean", and the
heads above read the codes as in the attention-only model. Block l's MLP re-writes the current
token into its own `mlp l` subspace (one neuron per token), a harmless job that nothing reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.inputs.repeated import ToyDataConfig, sample_batch
from induction.loading.models import ModelInfo
from induction.loading.native import boot_native, native_config

OFFSET_ROLES = ("previous_token", "offset")
INDUCTION_ROLES = ("induction", "shifted_induction", "anti_induction")
ROLES = (*OFFSET_ROLES, "duplicate_token", "fixed_offset", *INDUCTION_ROLES, "copy_suppression", "self_copy",
         "attention_sink", "inert")


@dataclass(frozen=True)
class HeadRole:
    """What one hand-built head does (module docstring).

    Attributes:
        role: one of `ROLES`.
        lag: how far back previous_token (1), offset and fixed_offset heads attend.
        query_lag: induction-type heads: the query reads tok[q - query_lag] (0: the token itself).
        key_lag: induction-type heads: the key reads tok[k - key_lag]; offset d = key_lag - query_lag.
        weight: the OV weight (logit written per unit of attention; negative suppresses).
    """

    role: str
    lag: int = 1
    query_lag: int = 0
    key_lag: int = 1
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown head role {self.role!r}; choose one of {', '.join(ROLES)}")
        if self.role == "previous_token" and self.lag != 1:
            raise ValueError(f"a previous_token head has lag 1, got {self.lag}")
        if self.role in (*OFFSET_ROLES, "fixed_offset") and self.lag < 1:
            raise ValueError(f"an offset head's lag must be >= 1, got {self.lag}")
        if self.role in INDUCTION_ROLES and self.offset < 1:
            raise ValueError(f"key_lag - query_lag must be >= 1 for an induction-type head, got {self.offset}")

    @property
    def offset(self) -> int:
        """The induction offset d = key_lag - query_lag of an induction-type head."""
        return self.key_lag - self.query_lag

    @property
    def value_lag(self) -> int:
        """The lag code an induction-type head copies: d - 1 (the token after the earlier occurrence)."""
        return self.offset - 1

    def reads(self) -> set[int]:
        """Lag codes (>= 1) this head reads: those layer-below offset heads write."""
        if self.role in INDUCTION_ROLES:
            return {c for c in (self.query_lag, self.key_lag, self.value_lag) if c >= 1}
        return set()

    def label(self) -> str:
        if self.role in ("offset", "fixed_offset"):
            return f"{self.role} (lag {self.lag})"
        if self.role == "shifted_induction":
            return f"shifted_induction (d={self.offset})"
        return self.role


@dataclass(frozen=True)
class HandBuiltSpec:
    """A hand-built model: its layers of heads and its sizes.

    Attributes:
        layers: one tuple of `HeadRole`s per layer, all of the same length (the heads per layer).
        d_vocab: vocabulary size V (token 0 is BOS).
        n_ctx: context length N.
        gap: attention-logit gap between a matching key and the others.
        ln_mlp: pre-norm LayerNorm + GELU MLP blocks instead of attention-only blocks.
        const: size of the constant direction (LayerNorm models; 1 otherwise).
        bos_token_id: the BOS token the prompts start with, or None.
        bos_fallback: every head but inert, self-copy and sink heads attends position 0 at half
            the gap, so that a query without a match reads BOS (embedded as zero) and writes nothing.
    """

    layers: tuple[tuple[HeadRole, ...], ...]
    d_vocab: int = 24
    n_ctx: int = 48
    gap: float = 20.0
    ln_mlp: bool = False
    const: float = 16.0
    bos_token_id: int | None = 0
    bos_fallback: bool = True

    def __post_init__(self) -> None:
        if not self.layers or len({len(layer) for layer in self.layers}) != 1 or not self.layers[0]:
            raise ValueError("a hand-built model needs >= 1 layer, each with the same number (>= 1) of heads")
        for layer, heads in enumerate(self.layers):
            for head, role in enumerate(heads):
                for c in sorted(role.reads()):
                    if not any(r.role in OFFSET_ROLES and r.lag == c for below in self.layers[:layer] for r in below):
                        raise ValueError(f"head L{layer}H{head} ({role.label()}) reads lag {c}, "
                                         "which no offset head in a layer below writes")
        lags = [r.lag for heads in self.layers for r in heads if r.role in (*OFFSET_ROLES, "fixed_offset")]
        if lags and max(lags) >= self.n_ctx:
            raise ValueError(f"lag {max(lags)} does not fit a context of {self.n_ctx}")

    @property
    def n_heads(self) -> int:
        return len(self.layers[0])

    def heads(self, *roles: str) -> list[tuple[int, int]]:
        """(layer, head) of every head with one of `roles`."""
        return [(layer, h) for layer, heads in enumerate(self.layers) for h, r in enumerate(heads) if r.role in roles]

    def circuit(self) -> list[tuple[int, int]]:
        """The heads that make the model learn in context: the (canonical and shifted) induction
        heads and the offset heads whose codes they read."""
        readers = self.heads("induction", "shifted_induction")
        feeders = {(layer, h) for rl, rh in readers for layer, h in self.heads(*OFFSET_ROLES)
                   if layer < rl and self.layers[layer][h].lag in self.layers[rl][rh].reads()}
        return sorted(set(readers) | feeders)

    def paths(self) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
        """The planted (sender, receiver, input) paths: a head's output read by a later head's query,
        key or value. Induction-type heads read the lag codes of the offset heads below through the
        input their lag belongs to (query_lag: q, key_lag: k, value_lag: v); copy-suppression heads
        read the `out` code of the heads below that write it through their query. Every other input
        reads the embeddings only."""
        writes_out = ("fixed_offset", *INDUCTION_ROLES, "copy_suppression", "self_copy")
        planted = []
        for layer, heads in enumerate(self.layers):
            for h, r in enumerate(heads):
                below = [(lb, hb, rb) for lb, hs in enumerate(self.layers[:layer]) for hb, rb in enumerate(hs)]
                if r.role in INDUCTION_ROLES:
                    for lag, which in ((r.query_lag, "q"), (r.key_lag, "k"), (r.value_lag, "v")):
                        planted += [((lb, hb), (layer, h), which) for lb, hb, rb in below
                                    if lag >= 1 and rb.role in OFFSET_ROLES and rb.lag == lag]
                elif r.role == "copy_suppression":
                    planted += [((lb, hb), (layer, h), "q") for lb, hb, rb in below if rb.role in writes_out]
        return sorted(planted)

    def roles(self) -> dict[str, str]:
        """"L{layer}H{head}" -> the head's role label."""
        return {f"L{layer}H{h}": r.label() for layer, heads in enumerate(self.layers) for h, r in enumerate(heads)}


@dataclass
class _Layout:
    """Offsets of the residual subspaces (module docstring)."""

    V: int
    N: int
    lags: list[int]
    extras: dict[str, int] = field(default_factory=dict)
    d_model: int = 0

    def __post_init__(self) -> None:
        self.d_model = 2 * self.V + self.N + self.V * len(self.lags)  # tok, pos, lags, out

    def tok(self, t: int) -> int:
        return t

    def pos(self, p: int) -> int:
        return self.V + p

    def lag(self, c: int, t: int) -> int:
        return t if c == 0 else self.V + self.N + self.V * self.lags.index(c) + t

    def out(self, t: int) -> int:
        return self.V + self.N + self.V * len(self.lags) + t

    def add(self, name: str, size: int) -> int:
        self.extras[name] = self.d_model
        self.d_model += size
        return self.extras[name]


def build_handbuilt(spec: HandBuiltSpec, name: str = "<hand-built>") -> TransformerBridge:
    """The model `spec` describes (module docstring), in eval mode, with `induction_info` set."""
    V, N = spec.d_vocab, spec.n_ctx
    lags = sorted({r.lag for heads in spec.layers for r in heads if r.role in OFFSET_ROLES})
    layout = _Layout(V, N, lags)
    has_sink = any(r.role == "attention_sink" for heads in spec.layers for r in heads)
    const = layout.add("const", 1) if (has_sink or spec.ln_mlp or spec.bos_fallback) else None
    const_value = spec.const if spec.ln_mlp else 1.0
    sink = layout.add("sink", 1) if has_sink else None
    mlp = [layout.add(f"mlp{layer}", V) for layer in range(len(spec.layers))] if spec.ln_mlp else []
    d_head = V + N + spec.bos_fallback  # room for the duplicate-token head's token match, self-penalty, fallback
    n_heads = spec.n_heads
    extra: dict[str, Any] = {"d_mlp": V} if spec.ln_mlp else {}
    cfg = native_config(
        n_layers=len(spec.layers), d_model=layout.d_model, n_heads=n_heads, n_ctx=N, d_vocab=V,
        attn_only=not spec.ln_mlp, normalization_type="LN" if spec.ln_mlp else None, seed=0, d_head=d_head, **extra,
    )
    model = boot_native(cfg)
    scale = spec.gap * math.sqrt(d_head)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for t in range(V):
        if not (spec.bos_fallback and t == spec.bos_token_id):  # BOS: a zero embedding, a no-op to attend to
            sd["embed.weight"][t, layout.tok(t)] = 1.0
        sd["unembed.weight"][t, layout.out(t)] = 1.0
    for p in range(N):
        sd["pos_embed.weight"][p, layout.pos(p)] = 1.0
        if const is not None:
            sd["pos_embed.weight"][p, const] = const_value

    def heads_of(layer: int) -> tuple[HeadRole, ...]:
        return spec.layers[layer]

    def rows(head: int, i: int) -> int:
        return head * d_head + i

    fallback = [(const, layout.pos(0), 0.5 / const_value)] if spec.bos_fallback else []

    def qk(layer: int, head: int, pairs: list[tuple[int, int, float]]) -> None:
        """pairs of (query dim, key dim, weight): score += weight * x_q[qdim] * x_k[kdim] * gap."""
        if heads_of(layer)[head].role not in ("self_copy", "attention_sink", "inert"):
            pairs = pairs + fallback
        for i, (qd, kd, w) in enumerate(pairs):
            sd[f"blocks.{layer}.attn.q.weight"][rows(head, i), qd] = w * scale
            sd[f"blocks.{layer}.attn.k.weight"][rows(head, i), kd] = 1.0

    def ov(layer: int, head: int, src, dst, weight: float, n: int = V) -> None:
        for t in range(n):
            sd[f"blocks.{layer}.attn.v.weight"][rows(head, t), src(t)] = 1.0
            sd[f"blocks.{layer}.attn.o.weight"][dst(t), rows(head, t)] = weight

    for layer, heads in enumerate(spec.layers):
        for head, r in enumerate(heads):
            if r.role in (*OFFSET_ROLES, "fixed_offset"):
                qk(layer, head, [(layout.pos(p), layout.pos(p - r.lag), 1.0) for p in range(r.lag, N)])
                dst = (lambda t: layout.out(t)) if r.role == "fixed_offset" else (lambda t, c=r.lag: layout.lag(c, t))
                ov(layer, head, layout.tok, dst, r.weight)
            elif r.role == "duplicate_token":
                qk(layer, head, [(layout.tok(t), layout.tok(t), 1.0) for t in range(V)]
                   + [(layout.pos(p), layout.pos(p), -1.0) for p in range(N)])
            elif r.role in INDUCTION_ROLES:
                qk(layer, head, [(layout.lag(r.query_lag, t), layout.lag(r.key_lag, t), 1.0) for t in range(V)])
                ov(layer, head, lambda t, c=r.value_lag: layout.lag(c, t), layout.out, r.weight)
            elif r.role == "copy_suppression":
                qk(layer, head, [(layout.out(t), layout.tok(t), 1.0) for t in range(V)])
                ov(layer, head, layout.tok, layout.out, r.weight)
            elif r.role == "self_copy":
                qk(layer, head, [(layout.pos(p), layout.pos(p), 1.0) for p in range(N)])
                ov(layer, head, layout.tok, layout.out, r.weight)
            elif r.role == "attention_sink":
                qk(layer, head, [(const, layout.pos(0), 1.0 / const_value)])
                ov(layer, head, lambda t: const, lambda t: sink, r.weight / const_value, n=1)
    if spec.ln_mlp:
        gain = 8.0  # neuron t: gelu(gain * (x_tok[t] - 1/2)) ~ gain/2 for the current token, ~0 otherwise
        for layer in range(len(spec.layers)):
            for t in range(V):
                sd[f"blocks.{layer}.mlp.in.weight"][t, layout.tok(t)] = gain
                sd[f"blocks.{layer}.mlp.in.bias"][t] = -gain / 2
                sd[f"blocks.{layer}.mlp.out.weight"][mlp[layer] + t, t] = 2.0 / gain
        for norm in _norm_names(len(spec.layers)):
            sd[f"{norm}.weight"] = torch.ones_like(sd[f"{norm}.weight"])
    model.load_state_dict(sd)
    model.induction_info = ModelInfo(spec=name, kind="memory", bos_token_id=spec.bos_token_id)
    if spec.ln_mlp:
        _calibrate_norms(model, spec)
    return model.eval()


def _norm_names(n_layers: int) -> list[str]:
    """The model's LayerNorms in the order the residual stream meets them."""
    return [f"blocks.{layer}.{ln}" for layer in range(n_layers) for ln in ("ln1", "ln2")] + ["ln_final"]


@torch.no_grad()
def _calibrate_norms(model: TransformerBridge, spec: HandBuiltSpec, n_sequences: int = 16) -> None:
    """Set each LayerNorm's weight to its mean scale on the model's stream, in order, so that each
    norm is close to subtracting the mean (each later norm measured with the earlier ones set)."""
    data = ToyDataConfig(d_vocab=spec.d_vocab, seq_len=spec.n_ctx, min_segment=min(4, (spec.n_ctx - 1) // 2),
                         bos_token_id=spec.bos_token_id)
    tokens = sample_batch(data, n_sequences, torch.Generator(device="cpu").manual_seed(0))
    for name in _norm_names(len(spec.layers)):
        hook = f"{name}.hook_scale"
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == hook)
        state = model.state_dict()
        state[f"{name}.weight"] = torch.full_like(state[f"{name}.weight"], float(cache[hook].mean()))
        model.load_state_dict(state)
