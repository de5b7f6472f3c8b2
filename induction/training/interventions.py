"""Interventions on heads during training: which heads does induction-head formation need?

Singh et al. (2024, "What needs to go right for an induction head?") clamp or ablate heads at every
training step and watch whether induction heads still form. `TrainConfig.interventions` lists
`HeadIntervention`s; `train` applies them at every step of their window:

- ``zero``: the head's output ``hook_z`` (`# [batch, pos, head_index, d_head]`, the input of W_O)
  is set to 0 in the training forward. The head then gets no gradient and writes nothing.
- ``mean``: ``hook_z`` of the head is replaced by its mean over the batch at each position,
  detached: the head writes a fixed, input-independent vector per position, and its Q/K/V get no
  gradient (its W_O still trains on the mean).
- ``frozen``: the head's Q, K, V and O weights (and Q/K/V biases; the O bias is shared by all
  heads and trains) are held at their initialisation values: their gradients are zeroed before
  clipping, so they take no part in the clipped norm, and their values are restored after each
  optimizer step (weight decay would move them otherwise). The initial values are the seed's
  TL-native init, so a resumed run restores the same values. With a window that starts after step
  0 the head is reset to its initial values at the window's first update.

A window [start, end) counts optimizer updates: update s takes the model from step s to step s+1,
and is intervened when start <= s < end. The forward hooks go through TL's hook context manager
(`TransformerBridge.hooks`) around the training forward only, so checkpoints hold plain weights
and `scan`/`track` measure the trained model without the intervention.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

INTERVENTION_KINDS = ("zero", "mean", "frozen")
FROZEN_WEIGHTS = ("q", "k", "v", "o")  # the head's slices of these linear maps are held at init
_SPEC = re.compile(r"^L(\d+)H(\d+)=(\w+)$")


@dataclass(frozen=True)
class HeadIntervention:
    """One head's intervention at every training step of a window.

    Attributes:
        layer: the head's layer (0-based).
        head: the head's index in its layer (0-based).
        kind: zero (hook_z set to 0), mean (hook_z set to its batch mean per position, detached) or
            frozen (Q/K/V/O weights held at their initialisation values).
        start: first optimizer update intervened (0).
        end: first update no longer intervened; None means to the end of training.
    """

    layer: int
    head: int
    kind: str
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        for name in ("layer", "head", "start"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"interventions: {name} must be a non-negative integer, got {value!r}")
        if self.kind not in INTERVENTION_KINDS:
            raise ValueError(f"interventions: unknown kind {self.kind!r} for {self.name}; "
                             f"choose one of {', '.join(INTERVENTION_KINDS)}")
        if self.end is not None and (not isinstance(self.end, int) or isinstance(self.end, bool) or self.end <= self.start):
            raise ValueError(f"interventions: end must be an integer > start ({self.start}) or None, got {self.end!r}")

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    def active(self, step: int) -> bool:
        """Whether update `step` (from step to step + 1) is intervened."""
        return self.start <= step and (self.end is None or step < self.end)

    def label(self) -> str:
        """``L0H2=zero`` with its window where it is not the whole run (``L0H2=zero@100:500``)."""
        window = "" if self.start == 0 and self.end is None else f"@{self.start}:{'' if self.end is None else self.end}"
        return f"{self.name}={self.kind}{window}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadIntervention":
        unknown = sorted(set(d) - {"layer", "head", "kind", "start", "end"})
        if unknown:
            raise ValueError(f"interventions: unknown key(s) {', '.join(unknown)}")
        return cls(**d)


def parse_interventions(spec: str, steps: str | None = None) -> list[HeadIntervention]:
    """`HeadIntervention`s from ``"L0H2=zero,L0H3=mean"`` and an optional window ``"START:END"``
    (either side may be empty: ``"100:"``, ``":500"``), the same window for every head."""
    start, end = parse_window(steps) if steps else (0, None)
    out = []
    for item in (part.strip() for part in spec.split(",")):
        match = _SPEC.match(item)
        if not match:
            raise ValueError(f"interventions: {item!r} is not LAYERHHEAD=KIND (e.g. L0H2=zero; kinds: "
                             f"{', '.join(INTERVENTION_KINDS)})")
        out.append(HeadIntervention(int(match[1]), int(match[2]), match[3], start, end))
    return out


def parse_window(text: str) -> tuple[int, int | None]:
    """``"START:END"`` -> (start, end or None); an empty side means 0 / the end of training."""
    left, sep, right = text.partition(":")
    try:
        if not sep:
            raise ValueError
        start = int(left) if left.strip() else 0
        end = int(right) if right.strip() else None
    except ValueError:
        raise ValueError(f"interventions: the step window must be START:END (e.g. 0:500 or 200:), got {text!r}") from None
    return start, end


def check_interventions(interventions: Sequence[HeadIntervention | dict[str, Any]], n_layers: int, n_heads: int,
                        steps: int) -> list[HeadIntervention]:
    """The interventions as `HeadIntervention`s, checked against the model and the schedule: each
    head exists, each window starts before the last update, and no head has two interventions."""
    out = [i if isinstance(i, HeadIntervention) else HeadIntervention.from_dict(dict(i)) for i in interventions]
    seen: set[tuple[int, int]] = set()
    for i, iv in enumerate(out):
        if iv.layer >= n_layers:
            raise ValueError(f"interventions[{i}]: layer {iv.layer} does not exist in a {n_layers}-layer model "
                             f"(layers 0-{n_layers - 1})")
        if iv.head >= n_heads:
            raise ValueError(f"interventions[{i}]: head {iv.head} does not exist with {n_heads} heads per layer "
                             f"(heads 0-{n_heads - 1})")
        if iv.start >= steps:
            raise ValueError(f"interventions[{i}]: start {iv.start} is not before the run's last update "
                             f"(steps = {steps}), so {iv.name} would never be intervened")
        if (iv.layer, iv.head) in seen:
            raise ValueError(f"interventions[{i}]: {iv.name} has more than one intervention")
        seen.add((iv.layer, iv.head))
    return out


def describe(interventions: Sequence[dict[str, Any] | HeadIntervention]) -> str:
    """One line for reports: ``L0H1=zero, L0H2=zero`` (windows where they are not the whole run)."""
    items = [i if isinstance(i, HeadIntervention) else HeadIntervention.from_dict(dict(i)) for i in interventions]
    return ", ".join(i.label() for i in items)


def intervene_z(z: Float[Tensor, "batch pos head_index d_head"], zero: Sequence[int],
                mean: Sequence[int]) -> Float[Tensor, "batch pos head_index d_head"]:
    """`z` with heads `zero` set to 0 and heads `mean` set to their (detached) batch mean per position."""
    heads = torch.arange(z.shape[2], device=z.device)
    if mean:
        is_mean = torch.isin(heads, torch.tensor(list(mean), device=z.device))[None, None, :, None]
        z = torch.where(is_mean, z.mean(dim=0, keepdim=True).detach().expand_as(z), z)
    if zero:
        is_zero = torch.isin(heads, torch.tensor(list(zero), device=z.device))[None, None, :, None]
        z = torch.where(is_zero, torch.zeros((), dtype=z.dtype, device=z.device), z)
    return z


class TrainingInterventions:
    """Applies a run's interventions to its model (`induction.training.train` calls it each step).

    `hooks(step)` wraps the training forward; `before_clip(step)` zeroes the frozen heads'
    gradients; `after_step(step)` restores their weights. The frozen heads' initial values come from
    `initial_config` (the run's TL-native config.json dict, whose seed fixes the init).
    """

    def __init__(self, interventions: Sequence[HeadIntervention], model: TransformerBridge,
                 initial_config: dict[str, Any] | None = None) -> None:
        self.interventions = list(interventions)
        self.model = model
        self._initial: dict[tuple[int, int], list[tuple[Tensor, tuple, Tensor]]] = {}
        frozen = [i for i in self.interventions if i.kind == "frozen"]
        if frozen:
            if initial_config is None:
                raise ValueError("interventions: a frozen head needs the run's model config for its initial weights")
            from induction.loading.native import boot_native

            init = boot_native(initial_config)
            for iv in frozen:
                self._initial[(iv.layer, iv.head)] = [
                    (param, index, start[index].detach().to(param.device).clone())
                    for (param, index), (start, _) in zip(head_params(model, iv.layer, iv.head),
                                                         head_params(init, iv.layer, iv.head))]

    def __bool__(self) -> bool:
        return bool(self.interventions)

    def _active(self, step: int, kinds: tuple[str, ...]) -> list[HeadIntervention]:
        return [i for i in self.interventions if i.kind in kinds and i.active(step)]

    @contextlib.contextmanager
    def hooks(self, step: int) -> Iterator[None]:
        """Forward hooks on ``hook_z`` for the zero and mean interventions active at update `step`."""
        active = self._active(step, ("zero", "mean"))
        if not active:
            yield
            return
        fwd_hooks = []
        for layer in sorted({i.layer for i in active}):
            zero = [i.head for i in active if i.layer == layer and i.kind == "zero"]
            mean = [i.head for i in active if i.layer == layer and i.kind == "mean"]
            fwd_hooks.append((f"blocks.{layer}.attn.hook_z",
                              lambda z, hook, zero=zero, mean=mean: intervene_z(z, zero, mean)))
        with self.model.hooks(fwd_hooks=fwd_hooks):
            yield

    def before_clip(self, step: int) -> None:
        """Zero the gradients of the heads frozen at update `step` (before clipping and the step)."""
        for iv in self._active(step, ("frozen",)):
            for param, index, _ in self._initial[(iv.layer, iv.head)]:
                if param.grad is not None:
                    param.grad[index] = 0

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Restore the weights of the heads frozen at update `step` to their initial values."""
        for iv in self._active(step, ("frozen",)):
            for param, index, start in self._initial[(iv.layer, iv.head)]:
                param[index] = start


def head_params(model: TransformerBridge, layer: int, head: int) -> list[tuple[torch.nn.Parameter, tuple]]:
    """Head (`layer`, `head`)'s parameters in the native bridge's linear maps, as (parameter, index)
    pairs: the rows of q/k/v weight and bias that compute its query, key and value, and the columns
    of o weight that read its `hook_z` (``W_Q[layer, head] == q.weight[rows].T``,
    ``W_O[layer, head] == o.weight[:, rows].T``)."""
    attn = model.blocks[layer].attn
    d_head = int(model.cfg.d_head)
    rows = slice(head * d_head, (head + 1) * d_head)
    out: list[tuple[torch.nn.Parameter, tuple]] = []
    for name in FROZEN_WEIGHTS:
        linear = getattr(attn, name)
        if name == "o":
            out.append((linear.weight, (slice(None), rows)))
        else:
            out.append((linear.weight, (rows,)))
            if getattr(linear, "bias", None) is not None:
                out.append((linear.bias, (rows,)))
    return out
