"""The loading boundary: a MODEL spec (CONTRACT.md) becomes a TransformerBridge in eval mode.

A MODEL spec is one of
1. a run directory written by `induction train` (`induction.runs`; its last checkpoint, or `checkpoint`),
2. a checkpoint directory (`induction.checkpoint`: config.json + model.safetensors + meta.json),
3. a Hugging Face model directory or hub name, through `TransformerBridge.boot_transformers`.

Weights are never unpickled. Every loaded model carries an `induction_info` attribute
(`ModelInfo`): where it came from, its BOS token, and the synthetic data it was trained on (if
any), so scores and reports can record provenance and choose prompts without model-specific
branches further down (STYLE: adapt at the loading boundary). `ModelRef` names a model without
loading it, for jobs that take "a model or a MODEL spec".
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelLoadError,
    load_checkpoint,
    one_line,
    read_json,
    read_meta,
)
from induction.runs import MANIFEST_FILE, is_run_dir, read_manifest, run_checkpoints


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
        raise ModelLoadError(f"cannot load Hugging Face model {spec!r} from {where}: {one_line(exc)}") from None
    model.eval()
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    model.induction_info = ModelInfo(spec=spec, kind="huggingface", checkpoint=revision, bos_token_id=bos)
    return model


def _attach_info(
    model: TransformerBridge, spec: str, kind: str, step: Any, ckpt_dir: Path, run_dir: Path | None = None
) -> None:
    meta = read_meta(ckpt_dir)
    step = meta.get("step") if step is None else step
    data = meta.get("data")
    if data is None and run_dir is not None:
        data = read_manifest(run_dir).get("data")
    bos = meta.get("bos_token_id", (data or {}).get("bos_token_id"))
    model.induction_info = ModelInfo(
        spec=spec, kind=kind, checkpoint=step, bos_token_id=bos, data=data, meta=meta
    )


def model_device(model: TransformerBridge) -> torch.device:
    """The device of the model's parameters: where every tensor the toolkit makes for it goes."""
    param = next(iter(model.parameters()), None)
    return torch.device("cpu") if param is None else param.device


def model_info(model: TransformerBridge) -> ModelInfo:
    """The model's `ModelInfo`; models built in memory get a default one (no BOS, no data)."""
    info = getattr(model, "induction_info", None)
    if isinstance(info, ModelInfo):
        return info
    tok = getattr(model, "tokenizer", None)
    return ModelInfo(spec="<in-memory>", kind="memory", bos_token_id=getattr(tok, "bos_token_id", None))




@dataclass(frozen=True)
class ModelRef:
    """A MODEL spec and how to load it, without loading it (what jobs and Ray tasks pass around)."""

    spec: str
    checkpoint: int | str | None = None
    revision: str | None = None

    def load(self) -> TransformerBridge:
        return load_model(self.spec, checkpoint=self.checkpoint, revision=self.revision)


ModelLike = Union[TransformerBridge, ModelRef, str, os.PathLike]
"""What a job takes as its model: a loaded bridge, a `ModelRef`, or a MODEL spec."""


def resolve_model(model: ModelLike) -> TransformerBridge:
    """`model` itself if it is loaded, else the model its spec names (`load_model`)."""
    if isinstance(model, TransformerBridge):
        return model
    if isinstance(model, ModelRef):
        return model.load()
    return load_model(model)
