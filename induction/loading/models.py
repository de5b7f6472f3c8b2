"""The loading boundary: a MODEL spec (CONTRACT.md) becomes a TransformerBridge in eval mode.

A MODEL spec is one of
1. a run directory written by `induction train` (`induction.loading.runs`; its last checkpoint, or `checkpoint`),
2. a checkpoint directory (`induction.loading.native`: config.json + model.safetensors + meta.json),
3. a Hugging Face model directory (read by `load_hf_directory`: config.json and safetensors only)
   or hub name (fetched into the Hugging Face cache by `induction.loading.hub`, then read as a directory),
4. a Hugging Face Trainer output (``checkpoint-N/`` folders) or a folder of revision directories
   (`induction.loading.hf_dirs`; its last checkpoint, or `checkpoint`).

Weights are unpickled only when the caller allows it (`allow_pickle`), and then only through torch's
restricted unpickler (`induction.loading.pickled`). Every loaded model carries an `induction_info` attribute
(`ModelInfo`): where it came from, its BOS token, and the synthetic data it was trained on (if
any), so scores and reports can record provenance and choose prompts without model-specific
branches further down (STYLE: adapt at the loading boundary). `ModelRef` names a model without
loading it, for jobs that take "a model or a MODEL spec".
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from transformer_lens.model_bridge import TransformerBridge

from induction.loading.devices import place, resolve_device, resolve_dtype
from induction.loading.hf_dirs import (
    FolderCheckpoint,
    folder_checkpoints,
    hf_tokenizer,
    is_checkpoint_folder,
    is_hf_model_dir,
    safetensors_files,
    tokenizer_dir,
)
from induction.loading.hub import fetch, official_name
from induction.loading.native import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelLoadError,
    load_checkpoint,
    one_line,
    read_meta,
)
from induction.loading.pickled import pickle_weight_files, pickled_as_safetensors
from induction.loading.runs import MANIFEST_FILE, is_run_dir, read_manifest, run_checkpoints
from induction.loading.verify import check_finite, check_load_report, file_of, verify_hf_directory


@dataclass
class ModelInfo:
    """Where a loaded model came from and what prompts suit it.

    Attributes:
        spec: the MODEL string the user gave.
        kind: "checkpoint", "run" or "huggingface".
        checkpoint: the checkpoint step (run directories, Trainer outputs, folders of revisions)
            or revision (Hugging Face hub), if any.
        bos_token_id: the token prepended to prompts, or None when the model uses none.
        data: the synthetic training-stream settings (`induction.inputs.repeated.ToyDataConfig` fields), if known.
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
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offline: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
) -> TransformerBridge:
    """Load what a MODEL spec names (CONTRACT.md), in eval mode, on `device` in `dtype`.

    Args:
        spec, checkpoint, revision, offline, allow_pickle, progress: as `load_spec`.
        device: ``auto`` (default: CUDA when available, else the CPU), ``cpu``, ``cuda``,
            ``cuda:N`` or ``mps`` (`induction.loading.devices`); checked before anything is loaded.
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.

    Raises:
        ModelLoadError: one line naming what is missing or wrong.
        DeviceError: a device or dtype this machine cannot provide (one line).
    """
    from induction.loading.quiet import quiet_third_parties

    target, precision = resolve_device(device), resolve_dtype(dtype)
    with quiet_third_parties():  # every kind of model, every check: stderr is the toolkit's (`loading.quiet`)
        model = load_spec(spec, checkpoint, revision, offline=offline, allow_pickle=allow_pickle, progress=progress)
    place(model, target, precision)
    return model.eval()


def load_spec(
    spec: str | os.PathLike[str],
    checkpoint: int | str | None = None,
    revision: str | None = None,
    *,
    offline: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
) -> TransformerBridge:
    """Load what a MODEL spec names (CONTRACT.md), in eval mode, with `induction_info` attached.

    Args:
        spec: a run directory, a checkpoint directory, a Hugging Face directory or hub name, a
            Trainer output or a folder of revision directories.
        checkpoint: for a run directory, Trainer output or folder of revisions, the step to load
            (default: the last); for a Hugging Face hub model, a published training checkpoint
            (same as `revision`).
        revision: a Hugging Face revision (Pythia ``step1000``, stanford-crfm ``checkpoint-400``);
            for a Trainer output or a folder of revisions, the name of the checkpoint's folder.
        offline: a hub name is looked up in the Hugging Face cache only (also when ``HF_HUB_OFFLINE=1``).
        allow_pickle: read weights that exist only as ``pytorch_model*.bin`` with torch's restricted
            unpickler (`induction.loading.pickled`); refused otherwise.
        progress: show the download's progress bars.

    Raises:
        ModelLoadError: one line naming what is missing or wrong.
    """
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_dir() and is_run_dir(path):
        if revision is not None:
            raise ModelLoadError(f"{path} is a run directory, which has no revisions (revision = {revision}); "
                                 "name a step with checkpoint = STEP")
        ckpts = run_checkpoints(path)
        if not ckpts:
            raise ModelLoadError(f"run {path} has no checkpoints yet")
        if checkpoint is None:
            step, ckpt_dir = ckpts[-1]
        else:
            try:
                wanted = int(checkpoint)
            except ValueError:
                raise ModelLoadError(f"checkpoint = {checkpoint}: a run directory's checkpoint must be a step number") from None
            matches = [c for c in ckpts if c[0] == wanted]
            if not matches:
                steps = ", ".join(str(s) for s, _ in ckpts)
                raise ModelLoadError(f"run {path} has no checkpoint at step {wanted} (steps: {steps})")
            step, ckpt_dir = matches[0]
        model = load_checkpoint(ckpt_dir)
        _attach_info(model, spec_str, "run", step, ckpt_dir, run_dir=path)
        return model
    # A Trainer output may also hold its final model at the top: that is what it names without a checkpoint.
    if path.is_dir() and (checkpoint is not None or revision is not None or not (path / CONFIG_FILE).exists()) \
            and is_checkpoint_folder(path):
        return _load_folder_checkpoint(path, spec_str, checkpoint, revision, allow_pickle)
    if path.is_dir() and (path / CONFIG_FILE).exists():
        if is_hf_model_dir(path):
            if checkpoint is not None or revision is not None:
                raise ModelLoadError(f"{path} is a local model directory, which has no revisions or checkpoints "
                                     "(a Trainer output or a folder of revision directories has)")
            model = load_hf_directory(path, allow_pickle=allow_pickle)
            _attach_hf_info(model, spec_str, None)
            return model
        if checkpoint is not None:
            raise ModelLoadError(f"{path} is a single checkpoint; checkpoint = STEP applies to run directories")
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
    if looks_local(spec_str):
        raise ModelLoadError(f"{spec_str} does not exist")
    return _load_huggingface(spec_str, revision or _as_revision(checkpoint), offline, allow_pickle, progress)


def looks_local(spec: str | os.PathLike[str]) -> bool:
    """Whether a MODEL spec that names nothing on disk is still a local path (``./x``, ``/x``, ``~/x``,
    ``a/b/c``), so "does not exist" rather than a hub name (``org/name``) to look up."""
    text = str(spec)
    return text.startswith((".", "/", "~")) or os.sep in text.strip("/").split("/", 1)[-1]


def _as_revision(checkpoint: int | str | None) -> str | None:
    if checkpoint is None:
        return None
    text = str(checkpoint)
    return f"step{text}" if text.isdigit() else text


def _load_huggingface(spec: str, revision: str | None, offline: bool, allow_pickle: bool,
                      progress: bool) -> TransformerBridge:
    """A hub model: its revision fetched into the Hugging Face cache (`induction.loading.hub.fetch`),
    then read from the snapshot folder as a local model directory (`load_hf_directory`)."""
    repo = official_name(spec)
    folder = fetch(repo, revision, offline=offline, allow_pickle=allow_pickle, progress=progress)
    model = load_hf_directory(folder, allow_pickle=allow_pickle)
    model.induction_info = ModelInfo(spec=spec, kind="huggingface", checkpoint=revision,
                                     bos_token_id=model.induction_info.bos_token_id,
                                     meta={"repo": repo, "revision": revision or "main", "commit": folder.name})
    return model


def _settle_tokenizer(model: TransformerBridge) -> int | None:
    """Drop the bridge's stand-in tokenizer and return the model's BOS token id.

    Without tokenizer files TransformerLens substitutes an empty tokenizer whose BOS (id 0) is not
    the model's; text cannot be encoded without a vocabulary, so the model then has no tokenizer and
    its BOS is the one its config names.
    """
    tok = getattr(model, "tokenizer", None)
    if tok is not None and len(tok) <= len(set(tok.all_special_ids)):
        model.tokenizer = None
        tok = None
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos is None:
        bos = getattr(getattr(model.original_model, "config", None), "bos_token_id", None)
    return bos


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own progress bars (writing, loading weights) off while a model loads: the
    CLI's stderr is for its progress and its one-line errors. transformers' switch also turns
    huggingface_hub's download bars back on, so a caller's (``--quiet``) choice for those is restored."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    from induction.loading.quiet import quiet_third_parties

    enabled = hf_logging.is_progress_bar_enabled()
    hub_off = are_progress_bars_disabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its multi-line load report too: what it says is checked and said in one line
    try:
        with quiet_third_parties():  # the offline kernel-hub notices (`induction.loading.quiet`)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if enabled:
            hf_logging.enable_progress_bar()
        if hub_off:
            disable_progress_bars()


def load_hf_directory(directory: str | os.PathLike[str], tokenizer_from: Sequence[Path] = (), *,
                      allow_pickle: bool = False) -> TransformerBridge:
    """A Hugging Face model directory as a TransformerBridge, reading config.json and safetensors only.

    `TransformerBridge.boot_transformers(dir)` would fall back to unpickling ``pytorch_model.bin``
    (and cannot be told not to), so the transformers model is built here with
    ``use_safetensors=True`` and handed to the bridge (`hf_model=`). A directory without
    safetensors weights, or whose config.json names a non-safetensors weights file, is refused.
    The path is made absolute: TransformerLens resolves its aliases ("neox", "neo", "pythia", ...)
    by exact name before it looks at the filesystem, and no alias starts with "/", so a local
    directory is never mistaken for a hub model. The tokenizer is the directory's own, else the first of
    `tokenizer_from` that has one (a Trainer saves it in each checkpoint, or only in its output
    directory), else the bridge's default. With `allow_pickle`, a directory whose weights exist
    only as ``pytorch_model*.bin`` is read through `induction.loading.pickled` (torch's restricted
    unpickler, then safetensors in a temporary directory).

    Raises:
        ModelLoadError: one line naming the directory and the problem.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory).expanduser().resolve()
    try:
        files = safetensors_files(directory)  # refuses pickled-only weights before transformers sees the directory
    except ModelLoadError:
        if not (allow_pickle and pickle_weight_files(directory)):
            raise
        with tempfile.TemporaryDirectory(prefix="induction-unpickled-") as tmp:
            model = load_hf_directory(pickled_as_safetensors(directory, Path(tmp)), (directory, *tokenizer_from))
        model.induction_info = ModelInfo(spec=str(directory), kind="huggingface",
                                         bos_token_id=model.induction_info.bos_token_id)
        return model
    where = tokenizer_dir(directory, *tokenizer_from)
    config, headers = verify_hf_directory(directory, files)
    try:
        with warnings.catch_warnings(), _quiet_transformers():
            warnings.simplefilter("ignore")
            hf_model, report = AutoModelForCausalLM.from_pretrained(
                str(directory), config=config, use_safetensors=True, attn_implementation="eager", dtype=torch.float32,
                output_loading_info=True,
            )
    except Exception as exc:  # transformers raises many types; all mean "cannot load this"
        raise ModelLoadError(f"cannot load Hugging Face model directory {directory}: {one_line(exc)}") from None
    check_load_report(report, headers, files, directory / CONFIG_FILE)
    check_finite(hf_model.state_dict().items(), file_of(headers, files[-1], hf_model.base_model_prefix))
    tokenizer = hf_tokenizer(where, directory)
    try:
        with warnings.catch_warnings(), _quiet_transformers():
            warnings.simplefilter("ignore")
            model = TransformerBridge.boot_transformers(str(directory), hf_model=hf_model.eval(), tokenizer=tokenizer,
                                                        device="cpu", dtype=torch.float32)
    except Exception as exc:  # transformers raises many types; all mean "cannot load this"
        raise ModelLoadError(f"cannot load Hugging Face model directory {directory}: {one_line(exc)}") from None
    model.eval()
    model.induction_info = ModelInfo(spec=str(directory), kind="huggingface", bos_token_id=_settle_tokenizer(model))
    return model


def _load_folder_checkpoint(
    folder: Path, spec: str, checkpoint: int | str | None, revision: str | None, allow_pickle: bool = False
) -> TransformerBridge:
    """One checkpoint of a Trainer output or a folder of revisions (`induction.loading.hf_dirs`)."""
    ckpts = folder_checkpoints(folder)
    chosen = _choose(folder, ckpts, checkpoint, revision)
    if is_hf_model_dir(chosen.path):
        model = load_hf_directory(chosen.path, tokenizer_from=(folder,), allow_pickle=allow_pickle)
        _attach_hf_info(model, spec, chosen.step)
    else:  # a checkpoint directory of ours (config.json + model.safetensors) among the revisions
        model = load_checkpoint(chosen.path)
        _attach_info(model, spec, "checkpoint", chosen.step, chosen.path)
    return model


def _choose(folder: Path, ckpts: list[FolderCheckpoint], checkpoint: int | str | None,
            revision: str | None) -> FolderCheckpoint:
    if checkpoint is not None and revision is not None:
        raise ModelLoadError("give a checkpoint step or a revision, not both")
    if revision is not None:
        named = [c for c in ckpts if c.name == revision]
        if not named:
            raise ModelLoadError(f"{folder} has no revision folder {revision!r} (folders: {_names(ckpts)})")
        return named[0]
    if checkpoint is None:
        return ckpts[-1]
    try:
        wanted = int(checkpoint)
    except ValueError:
        named = [c for c in ckpts if c.name == str(checkpoint)]
        if named:
            return named[0]
        raise ModelLoadError(f"checkpoint = {checkpoint}: a checkpoint of {folder} must be a step number "
                             "or a folder name") from None
    matches = [c for c in ckpts if c.step == wanted]
    if not matches:
        raise ModelLoadError(f"{folder} has no checkpoint at step {wanted} (steps: "
                             f"{', '.join(str(c.step) for c in ckpts)})")
    return matches[0]


def _names(ckpts: list[FolderCheckpoint], n: int = 6) -> str:
    names = [c.name for c in ckpts]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _attach_hf_info(model: TransformerBridge, spec: str, step: int | None) -> None:
    info = model.induction_info
    model.induction_info = ModelInfo(spec=spec, kind="huggingface", checkpoint=step, bos_token_id=info.bos_token_id)


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
    device: str | None = None
    dtype: str | None = None
    offline: bool = False
    allow_pickle: bool = False
    progress: bool = True

    def load(self) -> TransformerBridge:
        return load_model(self.spec, checkpoint=self.checkpoint, revision=self.revision, device=self.device,
                          dtype=self.dtype, offline=self.offline, allow_pickle=self.allow_pickle,
                          progress=self.progress)


ModelLike = Union[TransformerBridge, ModelRef, str, os.PathLike]
"""What a job takes as its model: a loaded bridge, a `ModelRef`, or a MODEL spec."""


def resolve_model(model: ModelLike) -> TransformerBridge:
    """`model` itself if it is loaded, else the model its spec names (`load_model`)."""
    if isinstance(model, TransformerBridge):
        return model
    if isinstance(model, ModelRef):
        return model.load()
    return load_model(model)
