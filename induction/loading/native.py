"""The checkpoint directory: one model's weights, config and metadata on disk (CONTRACT, MODEL 2).

    <dir>/config.json        the `TransformerBridgeConfig` fields `TransformerBridge.boot_native` needs
    <dir>/model.safetensors  the bridge's own `state_dict()` (keys `embed.weight`, `blocks.0.attn.q.weight`, ...)
    <dir>/meta.json          optional: step, tokens_seen, loss, the training data, ...

Written atomically (a temporary sibling directory, then rename); read without unpickling anything
(safetensors only), with every weight checked against the config before loading
(`induction.loading.verify`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from induction.common.fileio import give_default_mode, write_json_atomic
from induction.loading.errors import ModelLoadError, one_line
from induction.loading.verify import check_finite, verify_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"

# Fields of TransformerBridgeConfig that describe a TL-native model; what we write to config.json.
_NATIVE_FIELDS = (
    "d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_mlp", "d_vocab_out",
    "attn_only", "normalization_type", "act_fn", "positional_embedding_type", "eps",
    "use_attn_scale", "attn_scale", "n_key_value_heads", "gated_mlp", "final_rms",
    "rotary_dim", "rotary_base", "attention_dir", "init_mode", "initializer_range", "seed",
    "tokenizer_prepends_bos", "original_architecture", "model_name",
)
_REQUIRED_FIELDS = ("d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab")


def native_config(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_ctx: int = 128,
    d_vocab: int = 128,
    attn_only: bool = True,
    normalization_type: str | None = None,
    seed: int | None = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """The config.json dict of a TL-native model (the toolkit's toy models by default).

    Defaults: a 2-layer attention-only transformer, d_model 64, 4 heads of d_head 16, context 128,
    vocabulary 128 (token 0 is BOS); the setting in which induction heads form within ~1k steps.
    """
    if "d_head" not in overrides and d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}), or give d_head")
    cfg: dict[str, Any] = dict(
        d_model=d_model, d_head=overrides.pop("d_head", d_model // n_heads), n_heads=n_heads, n_layers=n_layers,
        n_ctx=n_ctx, d_vocab=d_vocab, attn_only=attn_only,
        normalization_type=normalization_type, act_fn="gelu", seed=seed,
    )
    cfg.update(overrides)
    return cfg


def validate_native_config(config: dict[str, Any]) -> None:
    """Raise unless `config` has the required fields, each a positive integer."""
    missing = [k for k in _REQUIRED_FIELDS if k not in config]
    if missing:
        raise ModelLoadError(f"config.json lacks required field(s): {', '.join(missing)}")
    for key in _REQUIRED_FIELDS:
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] <= 0:
            raise ModelLoadError(f"config.json: {key} must be a positive integer, got {config[key]!r}")


def boot_native(config: dict[str, Any]) -> TransformerBridge:
    """Build a TL-native bridge from a config.json dict, in eval mode (on the default device)."""
    validate_native_config(config)
    cfg = dict(config)
    if isinstance(cfg.get("dtype"), str):
        cfg["dtype"] = getattr(torch, cfg["dtype"].replace("torch.", ""))
    try:
        bridge_cfg = TransformerBridgeConfig.from_dict(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformerBridge.boot_native(bridge_cfg)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ModelLoadError(f"config.json is not a valid TL-native config: {one_line(exc)}") from exc
    return model.eval()


def native_config_of(model: TransformerBridge) -> dict[str, Any]:
    """The config.json dict that rebuilds `model` with `boot_native`."""
    out: dict[str, Any] = {}
    for key in _NATIVE_FIELDS:
        if not hasattr(model.cfg, key):
            continue
        value = getattr(model.cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if hasattr(value, "item"):  # numpy / torch scalars
            value = value.item()
        out[key] = value
    return out


def save_checkpoint(
    model: TransformerBridge, directory: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint directory atomically: config.json, model.safetensors, meta.json.

    The files are written into a temporary sibling directory which is then renamed into place, so a
    crash leaves either the old checkpoint or the new one, never half of one.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        give_default_mode(tmp / WEIGHTS_FILE)
        write_json_atomic(tmp / CONFIG_FILE, native_config_of(model))
        write_json_atomic(tmp / META_FILE, dict(meta or {}))
        give_default_mode(tmp, directory=True)  # mkdtemp makes 0700
        if directory.exists():  # swap: the old checkpoint stays whole until the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, old / "ck")
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file, turning any failure into a one-line `ModelLoadError`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{what}: {path} does not exist") from None
    except PermissionError:
        raise ModelLoadError(f"{what}: cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{what}: {path} is a directory, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{what}: {path} is not valid JSON ({one_line(exc)})") from None


def native_expected(config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], bool]]:
    """The bridge's tensors for a config.json dict, name -> (shape, floating), built on the meta device."""
    with torch.device("meta"):
        return {k: (tuple(v.shape), v.is_floating_point()) for k, v in boot_native(config).state_dict().items()}


def load_checkpoint(directory: str | os.PathLike[str]) -> TransformerBridge:
    """Load a checkpoint directory (config.json + model.safetensors); see module docstring."""
    directory = Path(directory)
    config = read_json(directory / CONFIG_FILE, "checkpoint config")
    if not isinstance(config, dict):
        raise ModelLoadError(f"checkpoint config: {directory / CONFIG_FILE} must hold a JSON object")
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise ModelLoadError(f"checkpoint {directory}: {WEIGHTS_FILE} is missing")
    config = dict(config, init_weights=False)
    validate_native_config(config)
    # Layer count, then dtypes, byte lengths and every shape, before anything of the config's size is built.
    verify_weights([weights], directory / CONFIG_FILE, config["n_layers"], "n_layers",
                   lambda: native_expected(config), strict_names=True)
    model = boot_native(config)
    try:
        state = load_file(str(weights))
    except PermissionError:
        raise ModelLoadError(f"checkpoint {directory}: cannot read {WEIGHTS_FILE}: permission denied") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"checkpoint {directory}: {WEIGHTS_FILE} is corrupt ({one_line(exc)})") from None
    check_finite(state.items(), lambda name: weights)
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_meta(ckpt_dir: Path) -> dict[str, Any]:
    """A checkpoint's meta.json ({} when it has none)."""
    if not (ckpt_dir / META_FILE).exists():
        return {}
    meta = read_json(ckpt_dir / META_FILE, "checkpoint meta")
    return meta if isinstance(meta, dict) else {}
