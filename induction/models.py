"""Models: build the toy TL-native models, save and load checkpoints, load anything a user names.

A MODEL spec (CONTRACT.md) is one of
1. a run directory written by `induction train` (its ``manifest.json`` lists the checkpoints),
2. a checkpoint directory: ``config.json`` (the `TransformerBridgeConfig` fields that
   `TransformerBridge.boot_native` needs) + ``model.safetensors`` (the bridge's own `state_dict()`)
   + optional ``meta.json``,
3. a Hugging Face model directory or hub name, through `TransformerBridge.boot_transformers`.

Weights are never unpickled: we write safetensors; anything else goes through `weights_only=True`.
Every loaded model carries an `induction_info` attribute (`ModelInfo`): where it came from, its BOS
token, and the synthetic data it was trained on (if any), so scores and reports can record provenance
and choose prompts without model-specific branches further down.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from induction.fileio import current_umask, write_json_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"

# Fields of TransformerBridgeConfig that describe a TL-native model; what we write to config.json.
_NATIVE_FIELDS = (
    "d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_mlp", "d_vocab_out",
    "attn_only", "normalization_type", "act_fn", "positional_embedding_type", "eps",
    "use_attn_scale", "attn_scale", "n_key_value_heads", "gated_mlp", "final_rms",
    "rotary_dim", "rotary_base", "attention_dir", "init_mode", "initializer_range", "seed",
    "tokenizer_prepends_bos", "original_architecture", "model_name",
)
_REQUIRED_FIELDS = ("d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab")


class ModelLoadError(ValueError):
    """A model spec that cannot be loaded; the message names the problem in one line."""


@dataclass
class ModelInfo:
    """Where a loaded model came from and what prompts suit it.

    Attributes:
        spec: the MODEL string the user gave.
        kind: "checkpoint", "run" or "huggingface".
        checkpoint: the checkpoint step (run directories) or revision (Hugging Face), if any.
        bos_token_id: the token prepended to prompts, or None when the model uses none.
        data: the synthetic training-stream settings (`induction.data.ToyDataConfig` fields), if known.
        meta: the checkpoint's meta.json (step, tokens_seen, loss, ...), if any.
    """

    spec: str
    kind: str
    checkpoint: str | int | None = None
    bos_token_id: int | None = None
    data: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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


def boot_native(config: dict[str, Any]) -> TransformerBridge:
    """Build a TL-native bridge from a config.json dict, in eval mode."""
    missing = [k for k in _REQUIRED_FIELDS if k not in config]
    if missing:
        raise ModelLoadError(f"config.json lacks required field(s): {', '.join(missing)}")
    cfg = dict(config)
    if isinstance(cfg.get("dtype"), str):
        cfg["dtype"] = getattr(torch, cfg["dtype"].replace("torch.", ""))
    for key in _REQUIRED_FIELDS:
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
            raise ModelLoadError(f"config.json: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["d_head"] * cfg["n_heads"] <= 0:
        raise ModelLoadError("config.json: d_head * n_heads must be positive")
    try:
        bridge_cfg = TransformerBridgeConfig.from_dict(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformerBridge.boot_native(bridge_cfg)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ModelLoadError(f"config.json is not a valid TL-native config: {_one_line(exc)}") from exc
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
        write_json_atomic(tmp / CONFIG_FILE, native_config_of(model))
        write_json_atomic(tmp / META_FILE, dict(meta or {}))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{what}: {path} is not valid JSON ({_one_line(exc)})") from None


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
    model = boot_native(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"checkpoint {directory}: {WEIGHTS_FILE} is corrupt ({_one_line(exc)})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short_list(unexpected)}")
        raise ModelLoadError(f"checkpoint {directory}: weights do not match config.json ({'; '.join(parts)})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelLoadError(
                f"checkpoint {directory}: {key} has shape {tuple(value.shape)}, "
                f"config.json implies {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(value).all():
            raise ModelLoadError(f"checkpoint {directory}: {key} contains NaN or inf")
    model.load_state_dict(state, strict=True)
    return model.eval()


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST_FILE).exists()


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run directory's manifest: ``{"checkpoints": [{"step", "path", ...}], "train_config", ...}``."""
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST_FILE, "run manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), list):
        raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE} has no 'checkpoints' list")
    return manifest


def run_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, checkpoint directory) for every checkpoint of a run, by step."""
    run_dir = Path(run_dir)
    out = []
    for entry in read_manifest(run_dir)["checkpoints"]:
        try:
            out.append((int(entry["step"]), run_dir / entry["path"]))
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"run manifest {run_dir / MANIFEST_FILE}: bad checkpoint entry {entry!r}") from None
    return sorted(out)


def load_model(
    spec: str | os.PathLike[str],
    checkpoint: int | str | None = None,
    revision: str | None = None,
) -> TransformerBridge:
    """Load what a MODEL spec names (CONTRACT.md), in eval mode, with `induction_info` attached.

    Args:
        spec: a run directory, a checkpoint directory, a Hugging Face directory or hub name.
        checkpoint: for a run directory, the step to load (default: the last); for a Hugging Face
            model, a published training checkpoint (same as `revision`).
        revision: a Hugging Face revision (Pythia ``step1000``, stanford-crfm ``checkpoint-400``).

    Raises:
        ModelLoadError: one line naming what is missing or wrong.
    """
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_dir() and is_run_dir(path):
        ckpts = run_checkpoints(path)
        if not ckpts:
            raise ModelLoadError(f"run {path} has no checkpoints yet")
        if checkpoint is None:
            step, ckpt_dir = ckpts[-1]
        else:
            try:
                wanted = int(checkpoint)
            except ValueError:
                raise ModelLoadError(f"--checkpoint for a run directory must be a step number, got {checkpoint!r}") from None
            matches = [c for c in ckpts if c[0] == wanted]
            if not matches:
                steps = ", ".join(str(s) for s, _ in ckpts)
                raise ModelLoadError(f"run {path} has no checkpoint at step {wanted} (steps: {steps})")
            step, ckpt_dir = matches[0]
        model = load_checkpoint(ckpt_dir)
        _attach_info(model, spec_str, "run", step, ckpt_dir, run_dir=path)
        return model
    if path.is_dir() and (path / CONFIG_FILE).exists():
        config = read_json(path / CONFIG_FILE, "model config")
        if isinstance(config, dict) and "model_type" in config:
            return _load_huggingface(spec_str, revision or _as_revision(checkpoint), local=True)
        if checkpoint is not None:
            raise ModelLoadError(f"{path} is a single checkpoint; --checkpoint applies to run directories")
        model = load_checkpoint(path)
        _attach_info(model, spec_str, "checkpoint", None, path)
        return model
    if path.exists() and not path.is_dir():
        raise ModelLoadError(f"{spec_str} is a file; MODEL must be a run, checkpoint or Hugging Face directory")
    if path.is_dir():
        raise ModelLoadError(
            f"{spec_str} is neither a run directory ({MANIFEST_FILE}), a checkpoint "
            f"({CONFIG_FILE} + {WEIGHTS_FILE}) nor a Hugging Face model directory"
        )
    if spec_str.startswith((".", "/", "~")) or os.sep in spec_str.strip("/").split("/", 1)[-1]:
        raise ModelLoadError(f"{spec_str} does not exist")
    return _load_huggingface(spec_str, revision or _as_revision(checkpoint), local=False)


def _as_revision(checkpoint: int | str | None) -> str | None:
    if checkpoint is None:
        return None
    text = str(checkpoint)
    return f"step{text}" if text.isdigit() else text


def _load_huggingface(spec: str, revision: str | None, local: bool) -> TransformerBridge:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = TransformerBridge.boot_transformers(spec, revision=revision)
    except Exception as exc:  # transformers raises many types; all mean "cannot load this"
        where = "local directory" if local else "name (offline: only the Hugging Face cache is searched)"
        raise ModelLoadError(f"cannot load Hugging Face model {spec!r} from {where}: {_one_line(exc)}") from None
    model.eval()
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    model.induction_info = ModelInfo(spec=spec, kind="huggingface", checkpoint=revision, bos_token_id=bos)
    return model


def _read_meta(ckpt_dir: Path) -> dict[str, Any]:
    if not (ckpt_dir / META_FILE).exists():
        return {}
    meta = read_json(ckpt_dir / META_FILE, "checkpoint meta")
    return meta if isinstance(meta, dict) else {}


def _attach_info(
    model: TransformerBridge, spec: str, kind: str, step: Any, ckpt_dir: Path, run_dir: Path | None = None
) -> None:
    meta = _read_meta(ckpt_dir)
    step = meta.get("step") if step is None else step
    data = meta.get("data")
    if data is None and run_dir is not None:
        data = read_manifest(run_dir).get("data")
    bos = meta.get("bos_token_id", (data or {}).get("bos_token_id"))
    model.induction_info = ModelInfo(
        spec=spec, kind=kind, checkpoint=step, bos_token_id=bos, data=data, meta=meta
    )


def model_info(model: TransformerBridge) -> ModelInfo:
    """The model's `ModelInfo`; models built in memory get a default one (no BOS, no data)."""
    info = getattr(model, "induction_info", None)
    if isinstance(info, ModelInfo):
        return info
    tok = getattr(model, "tokenizer", None)
    return ModelInfo(spec="<in-memory>", kind="memory", bos_token_id=getattr(tok, "bos_token_id", None))


def _short_list(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
