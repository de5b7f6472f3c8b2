"""Memory plans: a job's peak memory from a model's ``config.json`` and the job's settings, before any
weights are loaded.

One rule for every job. A plan is

    peak = parameter bytes + the largest phase's activation bytes (+ host storage, on the CPU)

- parameters: counted from the config (`ModelShape.parameter_count`: embeddings, learned positions,
  attention with grouped-query K/V (`n_key_value_heads`), the MLP (gated or not), norms, the
  unembedding unless tied) times the dtype's element size;
- activations, per phase of the job (`Phase`): the forwards and backwards of `circuits.memory`
  (attention patterns `[batch, head_index, query_pos, key_pos]`, residual-width tensors, the MLP
  hidden layer, logits with their float32 copies), plus what the phase keeps across forwards
  (an activation cache, a clean run's `hook_z`, gradients);
- host storage: tokens, per-prompt scores, a reference checkpoint's weights (CPU memory).

`MemoryPlan.check` refuses a plan that cannot fit, in one line naming the setting to lower (a config
field; the CLI maps it to its flag). `read_model_shape` parses the config of the GPT-2, GPT-NeoX
(Pythia), Llama, Qwen2, Mistral and GPT-Neo families and the toolkit's native checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from circuits import memory as formula
from induction.common import checks
from induction.common.checks import ResourceError
from induction.loading.devices import resolve_dtype

HF_FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "mistral", "gpt_neo")
NORM_PARAMS = {"layernorm": 2, "rmsnorm": 1, None: 0}  # per d_model: weight (and bias)


class MemoryPlanError(ResourceError):
    """A job whose plan does not fit; `field` is the config field to lower (the message leads with
    ``field = value``, so the CLI can say it as the flag that sets it)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a config: the widths and which weights exist."""

    family: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int  # 0: attention-only
    d_vocab: int
    n_ctx: int
    gated_mlp: bool = False
    tied: bool = False
    learned_positions: bool = False
    norm: str | None = "layernorm"
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    unembed_bias: bool = False

    def parameter_count(self) -> int:
        """Parameters the config implies (the published counts: Llama-3-8B 8,030,261,248, ...)."""
        d, heads, kv, dh = self.d_model, self.n_heads, self.n_kv_heads, self.d_head
        attn = d * heads * dh * 2 + 2 * d * kv * dh
        attn += (heads + 2 * kv) * dh * self.qkv_bias + d * self.out_bias
        mlp = 0
        if self.d_mlp:
            mlp = (3 if self.gated_mlp else 2) * d * self.d_mlp
            mlp += ((2 if self.gated_mlp else 1) * self.d_mlp + d) * self.mlp_bias
        norms = NORM_PARAMS[self.norm] * d
        per_layer = attn + mlp + norms * (2 if self.d_mlp else 1)
        embed = self.d_vocab * d + (self.n_ctx * d if self.learned_positions else 0)
        unembed = 0 if self.tied else self.d_vocab * d + self.d_vocab * self.unembed_bias
        return self.n_layers * per_layer + embed + unembed + norms

    def widths(self) -> dict[str, int]:
        """The arguments `circuits.memory`'s formulas take from a model."""
        return {"d_model": self.d_model, "d_mlp": self.d_mlp, "n_heads": self.n_heads, "d_vocab": self.d_vocab,
                "n_layers": self.n_layers, "kv_width": self.n_kv_heads * self.d_head}


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """The `ModelShape` of a Hugging Face ``config.json`` (`HF_FAMILIES`) or a native one (TL fields)."""
    kind = config.get("model_type")
    if kind is None and "d_model" in config:
        return _native_shape(config)
    get = config.get
    if kind == "gpt2":
        d, heads = int(get("n_embd")), int(get("n_head"))
        return ModelShape("gpt2", d, int(get("n_layer")), heads, heads, d // heads, int(get("n_inner") or 4 * d),
                          int(get("vocab_size")), int(get("n_positions")), tied=True, learned_positions=True,
                          qkv_bias=True, out_bias=True, mlp_bias=True)
    if kind == "gpt_neo":
        d, heads = int(get("hidden_size")), int(get("num_heads"))
        return ModelShape("gpt_neo", d, int(get("num_layers")), heads, heads, d // heads,
                          int(get("intermediate_size") or 4 * d), int(get("vocab_size")),
                          int(get("max_position_embeddings")), tied=True, learned_positions=True,
                          out_bias=True, mlp_bias=True)
    if kind == "gpt_neox":
        d, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        return ModelShape("gpt_neox", d, int(get("num_hidden_layers")), heads, heads, d // heads,
                          int(get("intermediate_size")), int(get("vocab_size")), int(get("max_position_embeddings")),
                          tied=bool(get("tie_word_embeddings", False)), qkv_bias=bool(get("attention_bias", True)),
                          out_bias=bool(get("attention_bias", True)), mlp_bias=True)
    if kind in ("llama", "qwen2", "mistral"):
        d, heads = int(get("hidden_size")), int(get("num_attention_heads"))
        return ModelShape(kind, d, int(get("num_hidden_layers")), heads, int(get("num_key_value_heads") or heads),
                          int(get("head_dim") or d // heads), int(get("intermediate_size")), int(get("vocab_size")),
                          int(get("max_position_embeddings")), gated_mlp=True,
                          tied=bool(get("tie_word_embeddings", False)), norm="rmsnorm",
                          qkv_bias=kind == "qwen2" or bool(get("attention_bias", False)),
                          out_bias=bool(get("attention_bias", False)), mlp_bias=bool(get("mlp_bias", False)))
    raise ValueError(f"config.json: model_type {kind!r} has no memory rule; known: {', '.join(HF_FAMILIES)}, "
                     "or a native checkpoint's config")


def _native_shape(config: dict[str, Any]) -> ModelShape:
    d, heads = int(config["d_model"]), int(config["n_heads"])
    norm = {"LN": "layernorm", "RMS": "rmsnorm"}.get(config.get("normalization_type"))
    return ModelShape("native", d, int(config["n_layers"]), heads, int(config.get("n_key_value_heads") or heads),
                      int(config.get("d_head") or d // heads),
                      0 if config.get("attn_only") else int(config.get("d_mlp") or 4 * d), int(config["d_vocab"]),
                      int(config["n_ctx"]), gated_mlp=bool(config.get("gated_mlp")), norm=norm,
                      learned_positions=config.get("positional_embedding_type", "standard") == "standard",
                      qkv_bias=True, out_bias=True, mlp_bias=True, unembed_bias=True)


def read_model_shape(directory: str | os.PathLike[str]) -> ModelShape:
    """`shape_from_config` of ``<directory>/config.json`` (no weights are read)."""
    return shape_from_config(json.loads((Path(directory) / "config.json").read_text()))


def shape_of_model(model: torch.nn.Module) -> ModelShape:
    """The `ModelShape` of a loaded bridge, from its TransformerLens config."""
    cfg = model.cfg
    heads = int(cfg.n_heads)
    d_mlp = 0 if getattr(cfg, "attn_only", False) else int(getattr(cfg, "d_mlp", None) or 4 * int(cfg.d_model))
    return ModelShape("loaded", int(cfg.d_model), int(cfg.n_layers), heads,
                      int(getattr(cfg, "n_key_value_heads", None) or heads), int(cfg.d_head), d_mlp,
                      int(cfg.d_vocab), int(cfg.n_ctx), gated_mlp=bool(getattr(cfg, "gated_mlp", False)))


# ---- phases and plans ----------------------------------------------------------------------------

@dataclass
class Phase:
    """One stage of a job: its activation peak and host storage, and the settings that size each.

    `setting` / `value`: the config field that sizes the activations (its name in its own config:
    ``n_prompts``, ``batch_size``) and its value; `host_setting` / `host_value` the same for the host
    storage.
    """

    name: str
    activation_bytes: int
    setting: str
    value: Any = None
    host_bytes: int = 0
    host_setting: str | None = None
    host_value: Any = None
    batch_size: int | None = None
    layers_per_backward: int | None = None


def forward_phase(shape: ModelShape, name: str, setting: str, value: Any, batch: int, n_pos: int, dtype: Any = None,
                  logit_positions: int | None = None, kept_bytes: int = 0, host_bytes: int = 0,
                  host_setting: str | None = None, host_value: Any = None) -> Phase:
    """A no-grad forward of `batch` x `n_pos` tokens (`circuits.memory.forward_bytes`) plus
    `kept_bytes` the phase holds across its forwards (a cache, reduced scores)."""
    size = resolve_dtype(dtype).itemsize
    act = formula.forward_bytes(**shape.widths(), batch=batch, n_pos=n_pos, element_size=size,
                                logit_positions=logit_positions)
    return Phase(name, act + kept_bytes, setting, value, host_bytes, host_setting, host_value, batch_size=batch)


def attribution_phase(shape: ModelShape, setting: str, value: Any, batch: int, n_pos: int, dtype: Any = None,
                      budget: int | None = None, host_bytes: int = 0, layers: int | None = None) -> Phase:
    """Attribution patching: the clean run's `hook_z` of every layer, and a backward over as many
    layers as fit `budget` (all when None or when they fit): with fewer, the residual stream at every
    block boundary too (`circuits.attribute_heads(layers_per_backward=)`); `layers` fixes the count."""
    size = resolve_dtype(dtype).itemsize
    z = shape.n_layers * batch * n_pos * shape.n_heads * shape.d_head * size
    boundaries = (shape.n_layers + 1) * batch * n_pos * shape.d_model * size

    def need(layers: int) -> int:
        graph = formula.backward_bytes(**shape.widths(), batch=batch, n_pos=n_pos, element_size=size,
                                       graph_layers=layers)
        return z + graph + (boundaries if layers < shape.n_layers else 0)

    if layers is not None:  # chosen by the caller
        layers = min(layers, shape.n_layers)
        budget = None
    else:
        layers = shape.n_layers
    while budget is not None and layers > 1 and need(layers) > budget:
        layers = max(1, layers // 2)
    name = "attribution (whole graph)" if layers >= shape.n_layers else f"attribution ({layers} layers per backward)"
    return Phase(name, need(layers), setting, value, host_bytes, setting, value, batch_size=batch,
                 layers_per_backward=layers)


@dataclass
class MemoryPlan:
    """A job's planned peak memory on a device (module docstring)."""

    job: str
    device: str
    dtype: str
    parameter_count: int
    parameter_bytes: int
    phases: list[Phase] = field(default_factory=list)
    extra_parameter_copies: int = 0  # e.g. the audit's reference checkpoint, held on the host

    @property
    def largest(self) -> Phase | None:
        return max(self.phases, key=lambda p: p.activation_bytes, default=None)

    @property
    def activation_bytes(self) -> int:
        return 0 if self.largest is None else self.largest.activation_bytes

    @property
    def host_bytes(self) -> int:
        return max((p.host_bytes for p in self.phases), default=0) + self.extra_parameter_copies * self.parameter_bytes

    @property
    def on_cpu(self) -> bool:
        return torch.device(self.device).type == "cpu"

    @property
    def peak_bytes(self) -> int:
        """Peak on the device (on the CPU, host storage included)."""
        return self.parameter_bytes + self.activation_bytes + (self.host_bytes if self.on_cpu else 0)

    @property
    def batch_size(self) -> int | None:
        return None if self.largest is None else self.largest.batch_size

    @property
    def layers_per_backward(self) -> int | None:
        return next((p.layers_per_backward for p in self.phases if p.layers_per_backward is not None), None)

    def fits(self, available: int | None = None, host_available: int | None = None) -> bool:
        try:
            self.check(available, host_available)
        except MemoryPlanError:
            return False
        return True

    def _culprit(self, host_only: bool) -> tuple[str, Any, str]:
        """The setting to lower: the one behind the biggest share of what does not fit."""
        parts = [(p.host_bytes, p.host_setting, p.host_value, f"{p.name}'s host storage") for p in self.phases
                 if p.host_setting]
        if not host_only:
            parts += [(p.activation_bytes, p.setting, p.value, p.name) for p in self.phases]
            parts.append((self.parameter_bytes, "dtype", self.dtype, "the parameters"))
        nbytes, setting, value, what = max(parts, key=lambda part: part[0])
        return setting, value, what

    def check(self, available: int | None = None, host_available: int | None = None) -> None:
        """Raise `MemoryPlanError` (one line naming the setting to lower and its value) when the plan does
        not fit `available` bytes of the device, or its host storage the CPU's (None: free now)."""
        available = checks.available_memory(self.device) if available is None else available
        if self.peak_bytes > available:
            self._refuse(self.peak_bytes, available, self.device, host_only=False)
        if not self.on_cpu and self.host_bytes:
            host = checks.available_memory("cpu") if host_available is None else host_available
            if self.host_bytes > host:
                self._refuse(self.host_bytes, host, "cpu", host_only=True)

    def _refuse(self, need: int, free: int, where: str, host_only: bool) -> None:
        setting, value, what = self._culprit(host_only)
        named = setting if value is None else f"{setting} = {value}"
        raise MemoryPlanError(f"{named}: {self.job} needs about {_gib(need)} of memory on {where} "
                              f"({_gib(self.parameter_bytes)} of {self.dtype} parameters; most for {what}), but "
                              f"only {_gib(free)} is available; lower this setting", setting)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "device": self.device, "dtype": self.dtype, "parameter_count": self.parameter_count,
                "parameter_bytes": self.parameter_bytes, "activation_bytes": self.activation_bytes,
                "host_bytes": self.host_bytes, "peak_bytes": self.peak_bytes, "batch_size": self.batch_size,
                "layers_per_backward": self.layers_per_backward, "phases": [asdict(p) for p in self.phases]}


def make_plan(job: str, shape: ModelShape, phases: Sequence[Phase], device: Any = "cpu", dtype: Any = None,
              parameter_bytes: int | None = None, extra_parameter_copies: int = 0) -> MemoryPlan:
    """A `MemoryPlan`; `parameter_bytes` measured on a loaded model, else counted from `shape`."""
    precision = resolve_dtype(dtype)
    count = shape.parameter_count()
    return MemoryPlan(job, str(device), str(precision).replace("torch.", ""), count,
                      count * precision.itemsize if parameter_bytes is None else parameter_bytes, list(phases),
                      extra_parameter_copies)


def sequences_per_budget(shape: ModelShape, seq_len: int, logit_positions: int, budget: int, dtype: Any = None) -> int:
    """The most sequences one forward may take within `budget` bytes of activations (at least 1)."""
    one = forward_phase(shape, "", "", None, 1, seq_len, dtype, logit_positions).activation_bytes
    return max(1, budget // one)


# ---- a model's shape before and after loading --------------------------------------------------------

def config_dir(spec: str | os.PathLike[str], checkpoint: int | str | None = None,
               revision: str | None = None) -> Path | None:
    """The directory holding the config.json that `load_model(spec, checkpoint, revision)` would read,
    found without loading anything; None when there is none on this machine (a hub name not cached)."""
    from induction.loading.hf_dirs import folder_checkpoints, is_checkpoint_folder
    from induction.loading.models import _as_revision, _choose, looks_local
    from induction.loading.runs import is_run_dir, run_checkpoints

    path = Path(str(spec)).expanduser()
    if path.is_dir() and is_run_dir(path):
        ckpts = run_checkpoints(path)
        chosen = [d for s, d in ckpts if checkpoint is None or str(s) == str(checkpoint)]
        return (chosen[-1] if checkpoint is None else chosen[0]) if chosen else None
    if path.is_dir() and (checkpoint is not None or revision is not None or not (path / "config.json").exists()) \
            and is_checkpoint_folder(path):
        return _choose(path, folder_checkpoints(path), checkpoint, revision).path
    if path.is_dir():
        return path if (path / "config.json").is_file() else None
    if path.exists() or looks_local(str(spec)):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(spec), "config.json", revision=revision or _as_revision(checkpoint))
    except Exception:  # an unusual name or cache layout: plan once the model is loaded instead
        return None
    return Path(found).parent if isinstance(found, str) else None


def shape_for(model: Any) -> tuple[ModelShape | None, int | None]:
    """(shape, measured parameter bytes) of a loaded bridge, or (shape from config.json, None) of a
    `ModelRef` or MODEL spec (no weights loaded; a native checkpoint's config is checked against its
    weights file's header first); (None, None) when no config is found before loading."""
    if isinstance(model, torch.nn.Module):
        return shape_of_model(model), sum(p.numel() * p.element_size() for p in model.parameters())
    spec, checkpoint, revision = (model.spec, model.checkpoint, model.revision) if hasattr(model, "spec") \
        else (model, None, None)
    directory = config_dir(spec, checkpoint, revision)
    if directory is None:
        return None, None
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None, None  # loading says what is wrong with it
    if not isinstance(config, dict):
        return None, None
    if "model_type" not in config:
        from induction.loading.native import WEIGHTS_FILE, ModelLoadError, native_expected, validate_native_config
        from induction.loading.verify import verify_weights

        try:
            validate_native_config(config)
        except ModelLoadError:
            return None, None  # loading says what is wrong with it
        if (directory / WEIGHTS_FILE).is_file():  # a mismatch is that error, not a memory refusal
            native = dict(config, init_weights=False)
            verify_weights([directory / WEIGHTS_FILE], directory / "config.json", native["n_layers"], "n_layers",
                           lambda: native_expected(native), strict_names=True)
    try:
        shape = shape_from_config(config)
    except (ValueError, KeyError, TypeError):
        return None, None
    if "model_type" in config and not _layers_match(directory, shape.n_layers):
        return None, None  # config and weights disagree: the loader's strict check says so, not a memory refusal
    return shape, None


def _layers_match(directory: Path, n_layers: int) -> bool:
    """Whether the safetensors headers in `directory` hold `n_layers` layers (True when it has none:
    nothing to compare; a hub name's snapshot is compared the same way)."""
    from induction.loading.verify import layer_count, read_headers

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return True
    try:
        held, _ = layer_count(read_headers(files))
    except Exception:  # an unreadable header: loading says what is wrong with it
        return False
    return held == n_layers


def check_job_memory(what: str, model: torch.nn.Module, host_bytes: int, batch: int, seq_len: int) -> None:
    """Refuse, in one line naming `what`, a job on a loaded `model` whose host storage (`host_bytes`) or
    one forward of `batch` x `seq_len` tokens would not fit (the plan of one phase)."""
    shape, parameter_bytes = shape_for(model)
    param = next(iter(model.parameters()), None)
    device, dtype = (param.device, param.dtype) if param is not None else ("cpu", None)
    phase = forward_phase(shape, what, what, None, batch, seq_len, dtype, host_bytes=host_bytes, host_setting=what)
    make_plan(what, shape, [phase], device, dtype, parameter_bytes).check()


def _gib(nbytes: int | float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"
