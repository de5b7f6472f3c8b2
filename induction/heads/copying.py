"""The one copying rule: how much a head's direct output raises the logits of the tokens it attends to.

Olsson et al.'s ReLU mean-centred ratio per source (`CopyingMap.source_scores`), its sampled estimate
over attention-weighted sources (`sampled_copying`), and Elhage et al.'s OV-circuit eigenvalue score
(`copying_ov_scores`). The definitions are in `induction.heads.scores`' docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from circuits import through_final_norm
from circuits.hooks import FINAL_SCALE, kv_head_index, per_query_head

COPYING_CHUNK_ELEMENTS = 2**20
"""The largest block of logits the copying score forms at once (`[head_index, source, vocabulary
chunk]`, float32 elements: 4 MiB, which stays in cache; larger blocks are slower on a CPU)."""


FLAT_LOGITS_RTOL = 1e-5
"""A logit change whose spread over the vocabulary is within this fraction of its size is flat."""


def flat_logits(top: Tensor, bottom: Tensor) -> Tensor:
    """Whether a source's direct logit change is flat: its largest minus its smallest entry within
    float32 rounding of their size. Such a change has no top token (a head writing only along the
    direction the final LayerNorm centres away), and its copying score is 0, not the sign of the
    rounding noise (which would read +-1)."""
    return (top - bottom) <= FLAT_LOGITS_RTOL * torch.maximum(top.abs(), bottom.abs())


@dataclass
class SourceDraws:
    """The sources drawn for the copying estimate: what each one's score needs.

    Attributes:
        v: [layer, prompt, head_index, source, d_head] the value vector the head reads there.
        tokens: [layer, prompt, head_index, source] its token.
        weighted: [prompt, layer, head_index] whether any source got attention from a repeated token
            (a prompt where none did scores 0).
        targets: [layer, prompt, head_index, source, offset] the token an offset-d head reading it
            predicts, tok[k - d + 1], for each scored d >= 1 (`offset_targets`).
        valid: like `targets`: whether k - d + 1 is a content position.
        offsets: the scored offsets (the targets cover those >= 1).
    """

    v: Float[Tensor, "layer batch head_index source d_head"]
    tokens: Int[Tensor, "layer batch head_index source"]
    weighted: Bool[Tensor, "batch layer head_index"]
    targets: Int[Tensor, "layer batch head_index source target"]
    valid: Bool[Tensor, "layer batch head_index source target"]
    offsets: tuple[int, ...]

    @staticmethod
    def cat(parts: list[SourceDraws]) -> SourceDraws:
        def joined(name: str) -> Tensor:
            return torch.cat([getattr(p, name) for p in parts], dim=1)

        return SourceDraws(v=joined("v"), tokens=joined("tokens"), weighted=torch.cat([p.weighted for p in parts]),
                           targets=joined("targets"), valid=joined("valid"), offsets=parts[0].offsets)


def offset_copying_per_prompt(
    positive: Float[Tensor, "*lead target"], offsets: Sequence[int]
) -> Float[Tensor, "*lead offset"]:
    """Offset copying at every offset: the scores at d >= 1 in place, NaN at d < 1."""
    out = torch.full((*positive.shape[:-1], len(offsets)), float("nan"), device=positive.device)
    out[..., [i for i, d in enumerate(offsets) if d >= 1]] = positive
    return out


def final_norm_matrix(model: TransformerBridge) -> Float[Tensor, "d_model d_model"]:
    """The final norm as a matrix N (row i = norm(e_i)), its scale frozen at 1 and its bias removed.

    It is `circuits.through_final_norm` (the bridge's own norm) applied to the basis vectors, so a
    LayerNorm centres and weights, an RMSNorm weights, and no norm is the identity, with no special case.
    """
    d_model = int(model.cfg.d_model)
    W_U = model.W_U
    basis = torch.eye(d_model, device=W_U.device, dtype=W_U.dtype)[:, None, None, :]  # [part, batch, pos, d_model]
    scale = torch.ones(1, 1, 1, device=W_U.device, dtype=W_U.dtype) if FINAL_SCALE in model.hook_dict else None
    return through_final_norm(model, basis, scale).reshape(d_model, d_model).float()


class CopyingMap:
    """Source copying scores (module docstring) through each head's map ``W_O N W_U``, in float32.

    ``W_O N`` is formed once ([layer, head_index, d_head, d_model]); each vocabulary chunk's
    ``W_O N W_U[:, chunk]`` ([head_index, d_head, chunk]) once per call, so a source costs d_head x
    d_vocab (not d_model x d_vocab) and every intermediate stays within `COPYING_CHUNK_ELEMENTS`.
    The logits' mean over the vocabulary is linear in v: ``v . (W_O N mean_c W_U[:, c])``.
    """

    def __init__(self, model: TransformerBridge) -> None:
        with torch.no_grad():
            self.W_ON = model.W_O.detach().float() @ final_norm_matrix(model)  # [layer, head_index, d_head, d_model]
            self.W_U = model.W_U.detach().float()  # [d_model, d_vocab]
            mean_unembed = self.W_U.mean(-1).double()  # [d_model]
            self.mean_map = self.W_ON.double() @ mean_unembed  # [layer, head_index, d_head]: v -> mean logit

    def kv_head_of(self, n_kv: int) -> Tensor:
        """The kv head each query head reads (`circuits.hooks.kv_head_index`)."""
        return kv_head_index(self.W_ON.shape[1], n_kv, self.W_ON.device)

    @torch.no_grad()
    def source_scores(
        self,
        layer: int,
        v: Float[Tensor, "head_index source d_head"],
        own: Int[Tensor, "head_index source"] | Int[Tensor, "head_index source target"],
    ) -> Float[Tensor, "head_index source"] | Float[Tensor, "head_index source target"]:
        """Each source's copying score: relu(c[t])/max(relu(c)) - relu(-c[t])/max(relu(-c)), where
        c is the mean-centred ``v W_O N W_U`` and t the source's own token (module docstring), or
        each of several tokens t (`own` [head_index, source, target]: one logit pass serves them all).

        Streams the vocabulary in chunks (sources in blocks within a chunk), keeping the running
        max, min and own-token logit; the max and the own logit come from the same numbers, so a
        head that raises its own token most scores exactly 1.
        """
        n_heads, n_src, d_head = v.shape
        single = own.dim() == 2
        own = own[..., None] if single else own
        d_model, d_vocab = self.W_U.shape
        W = self.W_ON[layer].reshape(n_heads * d_head, d_model)
        budget = COPYING_CHUNK_ELEMENTS
        width = max(1, min(d_vocab, budget // (n_heads * max(d_head, min(n_src, 256)))))  # vocabulary columns
        block = max(1, budget // (n_heads * width))  # sources per logit block
        top = torch.full(own.shape[:2], -torch.inf, device=v.device)
        bottom = torch.full(own.shape[:2], torch.inf, device=v.device)
        own_logit = torch.zeros(own.shape, device=v.device)
        for c0 in range(0, d_vocab, width):
            c1 = min(d_vocab, c0 + width)
            head_map = (W @ self.W_U[:, c0:c1]).view(n_heads, d_head, c1 - c0)
            for s0 in range(0, n_src, block):
                s1 = min(n_src, s0 + block)
                logits = torch.bmm(v[:, s0:s1], head_map)  # [head_index, source, chunk]
                low, high = torch.aminmax(logits, dim=-1)
                top[:, s0:s1] = torch.maximum(top[:, s0:s1], high)
                bottom[:, s0:s1] = torch.minimum(bottom[:, s0:s1], low)
                ob = own[:, s0:s1]
                here = logits.gather(-1, (ob - c0).clamp(0, c1 - c0 - 1))
                own_logit[:, s0:s1] = torch.where((ob >= c0) & (ob < c1), here, own_logit[:, s0:s1])
        mean = torch.einsum("hsd,hd->hs", v.double(), self.mean_map[layer])[..., None]
        top, bottom = top[..., None], bottom[..., None]
        own_c = own_logit.double() - mean
        rise, fall = (top.double() - mean).clamp_min(1e-30), (mean - bottom.double()).clamp_min(1e-30)
        score = torch.where(flat_logits(top, bottom), 0.0, own_c.clamp_min(0) / rise - (-own_c).clamp_min(0) / fall)
        return (score[..., 0] if single else score).float()


@torch.no_grad()
def sampled_copying(
    copying: CopyingMap, draws: SourceDraws
) -> tuple[Float[Tensor, "batch layer head_index"], Float[Tensor, "batch layer head_index"],
           Float[Tensor, "batch layer head_index offset"]]:
    """Per-prompt copying estimates (the mean of the drawn sources' scores; 0 where no source was
    weighted) and the sample variance of those scores, [prompt, layer, head_index] each; and the
    offset copying estimates [prompt, layer, head_index, offset]: per d, the mean of the drawn
    sources' scores on their offset-d targets over the draws whose target is content (the ratio
    estimate of `induction.heads.offsets.offset_copying`; NaN where none is, or nothing was weighted, or d < 1)."""
    n_layers, n_prompts, n_heads, n_src, d_head = draws.v.shape
    own = torch.cat([draws.tokens[..., None], draws.targets], -1)  # [layer, prompt, head_index, source, 1 + target]
    scores = torch.stack([
        copying.source_scores(
            layer,
            draws.v[layer].transpose(0, 1).reshape(n_heads, n_prompts * n_src, d_head),
            own[layer].transpose(0, 1).reshape(n_heads, n_prompts * n_src, -1),
        ).view(n_heads, n_prompts, n_src, -1)
        for layer in range(n_layers)
    ]).permute(2, 0, 1, 3, 4)  # [prompt, layer, head_index, source, 1 + target]
    zero = torch.zeros((), device=scores.device)
    mean = torch.where(draws.weighted, scores[..., 0].mean(-1), zero)
    variance = torch.where(draws.weighted, scores[..., 0].var(-1), zero)
    valid = draws.valid.permute(1, 0, 2, 3, 4).float()  # [prompt, layer, head_index, source, target]
    den = valid.sum(-2)
    positive = (scores[..., 1:] * valid).sum(-2) / den.clamp_min(1.0)
    positive = torch.where((den > 0) & draws.weighted[..., None], positive, float("nan"))
    return mean, variance, offset_copying_per_prompt(positive, draws.offsets)


@torch.no_grad()
def copying_ov_scores(model: TransformerBridge) -> Float[Tensor, "layer head_index"]:
    """sum(eig)/sum(|eig|) of each head's full OV circuit W_E W_V W_O W_U (Elhage et al. 2021)."""
    W_V = model.W_V.detach().double()  # [layer, head_index, d_model, d_head]
    W_O = model.W_O.detach().double()  # [layer, head_index, d_head, d_model]
    W_V = per_query_head(W_V, W_O.shape[1], dim=1)
    W_U, W_E = model.W_U.detach(), model.W_E.detach()
    UE = torch.zeros(W_U.shape[0], W_U.shape[0], dtype=torch.float64, device=W_U.device)  # [d_model, d_model]
    step = max(1, COPYING_CHUNK_ELEMENTS // W_U.shape[0])  # vocabulary chunks: no float64 copy of W_U or W_E
    for c0 in range(0, W_U.shape[1], step):
        UE += W_U[:, c0 : c0 + step].double() @ W_E[c0 : c0 + step].double()
    small = W_O @ UE @ W_V  # [layer, head_index, d_head, d_head]; same nonzero spectrum as the VxV circuit
    eig = torch.linalg.eigvals(small)
    return (eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)).float()
