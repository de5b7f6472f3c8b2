"""Hugging Face directories on disk, read without unpickling anything (CONTRACT, MODEL 3 and 4).

    <model>/config.json                      has "model_type"
    <model>/model.safetensors                or model.safetensors.index.json + its shards
    <model>/tokenizer.json, ...              optional

    <out>/checkpoint-400/                    a Hugging Face Trainer output: one model directory per
    <out>/checkpoint-400/trainer_state.json  save, plus the Trainer's state (JSON) and its pickles
    <out>/checkpoint-400/optimizer.pt, rng_state.pth, scheduler.pt, training_args.bin   (never opened)

    <folder>/step1000/, <folder>/step2000/   a folder of revisions: one model directory per revision,
                                             the step the trailing number of its name

Only JSON and safetensors files are read here. A model directory whose weights exist only as
pickles (`pytorch_model.bin`, ...) is refused rather than loaded (transformers would unpickle them),
unless the caller opts in (`induction.loading.pickled`: torch's restricted unpickler only).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from induction.common.fileio import file_sha256
from induction.loading.native import CONFIG_FILE, ModelLoadError, one_line, read_json

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TRAINER_STATE_FILE = "trainer_state.json"
TRAINER_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def is_hf_model_dir(path: Path) -> bool:
    """A directory whose config.json is a transformers config (it names a `model_type`)."""
    if not (path / CONFIG_FILE).is_file():
        return False
    config = read_json(path / CONFIG_FILE, "model config")
    return isinstance(config, dict) and "model_type" in config


def safetensors_size_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be whole (None: its size is what its header promises): a file
    still being written, or cut short. Reads the 8-byte length and the JSON header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{path.name} has {size} bytes, no header"
            n = int.from_bytes(prefix, "little")
            if n > size - 8:
                return f"{path.name} has {size} bytes, fewer than its header's {n}"
            header = json.loads(handle.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name} is unreadable ({exc.__class__.__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has no header"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    expected = 8 + n + max(ends, default=0)
    return None if size >= expected else f"{path.name} has {size} of its {expected} bytes"


def pending_reason(directory: Path) -> str | None:
    """Why `directory` looks like a model directory still being written (None: it looks whole):
    no config.json yet, no weights yet (and no pickled ones either, which are refused, not waited
    for), a shard its index names not there yet, or a safetensors file shorter than its header says."""
    if not (directory / CONFIG_FILE).is_file():
        return f"no {CONFIG_FILE} yet"
    if not (directory / SAFETENSORS_FILE).is_file() and not (directory / SAFETENSORS_INDEX).is_file():
        pickled = any(p.name.startswith(("pytorch_model", "model")) and p.suffix in PICKLE_SUFFIXES
                      for p in directory.iterdir())
        return None if pickled else "no weights yet"  # pickled weights are refused, not waited for
    try:
        files = safetensors_files(directory)
    except MissingShardError as exc:
        return exc.shard + " not written yet"
    except ModelLoadError:
        return None  # not a matter of time: loading it says what is wrong
    for path in files:
        if path.suffix == ".safetensors":
            problem = safetensors_size_problem(path)
            if problem is not None:
                return problem
    return None


def split_pending(ckpts: list[FolderCheckpoint]) -> tuple[list[FolderCheckpoint], dict[str, str] | None]:
    """`ckpts` (by step) without the last one if that one is still being written (`pending_reason`),
    and {"name", "reason"} of the one left out. A live training run's newest checkpoint is skipped
    rather than failing the whole track; an earlier incomplete one is damage, and loading it fails
    in one line naming it."""
    if not ckpts:
        return ckpts, None
    reason = pending_reason(ckpts[-1].path)
    if reason is None:
        return ckpts, None
    return ckpts[:-1], {"name": ckpts[-1].name, "reason": reason}


class MissingShardError(ModelLoadError):
    """A safetensors index names a shard that is not in the directory (yet)."""

    def __init__(self, message: str, shard: str) -> None:
        super().__init__(message)
        self.shard = shard


def safetensors_files(directory: Path) -> list[Path]:
    """The safetensors files that hold `directory`'s weights (the index first, then its shards).

    Raises:
        ModelLoadError: there are none (naming the pickles found instead), the index is unreadable
            or names a file that is not safetensors, or config.json names a non-safetensors file.
    """
    config = read_json(directory / CONFIG_FILE, "model config")
    named = config.get("transformers_weights") if isinstance(config, dict) else None
    if named is not None and not _is_safetensors_name(str(named)):
        raise ModelLoadError(f"{directory}: config.json names weights file {named!r}, which is not safetensors "
                             "(pickled weights are never loaded)")
    if named is not None and ("/" in str(named) or "\\" in str(named)):
        raise ModelLoadError(f"{directory}: config.json names weights file {named!r} outside the directory")
    named_file = None if named is None else directory / str(named)
    if named_file is not None and named_file.is_file() and not str(named).endswith(".index.json"):
        return [named_file]  # what transformers reads when config.json names its weights
    if (directory / SAFETENSORS_FILE).is_file():
        return [directory / SAFETENSORS_FILE]
    index = named_file if named_file is not None and named_file.is_file() else directory / SAFETENSORS_INDEX
    if index.is_file():
        data = read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index} has no 'weight_map'")
        shards = sorted(set(map(str, weight_map.values())))
        bad = [s for s in shards if not _is_safetensors_name(s) or "/" in s or "\\" in s]
        if bad:
            raise ModelLoadError(f"{index} names {bad[0]!r}, which is not a safetensors file in {directory}")
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise MissingShardError(f"{index} names {missing[0]}, which is missing from {directory}", missing[0])
        return [index, *(directory / s for s in shards)]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f"found {', '.join(pickles)}" if pickles else "no weights at all"
    optin = ("; allow_pickle=True reads pytorch_model*.bin with torch.load(weights_only=True)"
             if any(p.startswith("pytorch_model") and p.endswith(".bin") for p in pickles) else "")
    raise ModelLoadError(f"{directory}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} ({found}; "
                         f"pickled weights are not read by default{optin})")


def _is_safetensors_name(name: str) -> bool:
    return name.endswith((".safetensors", ".safetensors.index.json"))


def weights_sha256(directory: Path) -> str:
    """One hash of a model directory's safetensors files (names and contents): its identity."""
    digest = hashlib.sha256()
    for path in safetensors_files(directory):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def tokenizer_dir(*candidates: Path) -> Path | None:
    """The first directory holding tokenizer files (a Trainer saves them in each checkpoint, or
    only in its output directory), or None."""
    for where in candidates:
        if any((where / name).is_file() for name in TOKENIZER_FILES):
            return where
    return None


def hf_tokenizer(where: Path | None, directory: Path) -> Any:
    """The tokenizer to hand the bridge: None where it is the model directory's own (the bridge loads
    it as boot_transformers would), else the one in `where` (a Trainer's output directory). Either
    way its JSON files are read first, so a broken one is named, not the checkpoint."""
    if where is None:
        return None
    for name in TOKENIZER_FILES:
        if name.endswith(".json") and (where / name).exists():
            read_json(where / name, "tokenizer file")
    if where == directory:
        return None
    from transformers import AutoTokenizer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return AutoTokenizer.from_pretrained(str(where), add_bos_token=True)
            except (TypeError, ValueError):  # tokenizers without a BOS setting
                return AutoTokenizer.from_pretrained(str(where))
    except Exception as exc:  # tokenizers raise many types; all mean "this tokenizer is unusable"
        raise ModelLoadError(f"the tokenizer files in {where} cannot be read ({one_line(exc)}); fix or remove them") from None


# ---- folders of checkpoints: Trainer outputs and folders of revisions ----------------------------

@dataclass(frozen=True)
class FolderCheckpoint:
    """One model directory inside a Trainer output or a folder of revisions.

    Attributes:
        step: its training step (the folder name's number, or trainer_state.json's `global_step`).
        path: the model directory.
        trainer_state: its trainer_state.json, if it has one.
    """

    step: int
    path: Path
    trainer_state: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name


def is_trainer_output(path: Path) -> bool:
    """A directory with at least one ``checkpoint-N/`` subfolder (a Hugging Face Trainer's output_dir)."""
    return path.is_dir() and any(c.is_dir() and TRAINER_CHECKPOINT.fullmatch(c.name) for c in path.iterdir())


def is_revision_folder(path: Path) -> bool:
    """A directory with at least one subfolder holding a config.json (one model directory per revision)."""
    return path.is_dir() and any(c.is_dir() and (c / CONFIG_FILE).is_file() for c in path.iterdir())


def is_checkpoint_folder(path: Path) -> bool:
    return is_trainer_output(path) or is_revision_folder(path)


def folder_checkpoints(folder: Path) -> list[FolderCheckpoint]:
    """The checkpoints of a Trainer output (its ``checkpoint-N/`` folders only) or of a folder of
    revisions (every subfolder with a config.json), by step.

    A checkpoint's step is the number its folder name ends with (``checkpoint-400``, ``step1000``,
    ``rev-400``); trainer_state.json's `global_step`, where present, must agree with it, and names
    the step of a folder whose name has no number.

    Raises:
        ModelLoadError: a checkpoint without a step, two with the same step, or none at all.
    """
    trainer = is_trainer_output(folder)
    out: dict[int, FolderCheckpoint] = {}
    for child in sorted(folder.iterdir()):
        if not child.is_dir():
            continue
        if trainer and not TRAINER_CHECKPOINT.fullmatch(child.name):
            continue  # e.g. runs/ (TensorBoard logs); the final model at the top is not a checkpoint
        if not trainer and not (child / CONFIG_FILE).is_file():
            continue  # e.g. track/ (our own cache)
        state = read_trainer_state(child)
        match = re.search(r"(\d+)$", child.name)
        step = int(match.group(1)) if match else None
        if state is not None and "global_step" in state:
            logged = _int(state["global_step"], child / TRAINER_STATE_FILE, "global_step")
            if step is not None and logged != step:
                raise ModelLoadError(f"{child}: the folder name says step {step} but {TRAINER_STATE_FILE} "
                                     f"says global_step {logged}")
            step = logged
        if step is None:
            raise ModelLoadError(f"{child}: no step number in the folder name (like step1000 or checkpoint-400) "
                                 f"and no {TRAINER_STATE_FILE}")
        if step in out:
            raise ModelLoadError(f"{folder}: {out[step].name} and {child.name} are both step {step}")
        out[step] = FolderCheckpoint(step=step, path=child, trainer_state=state)
    if not out:
        raise ModelLoadError(f"{folder} holds no checkpoint folders")
    return [out[s] for s in sorted(out)]


def read_trainer_state(directory: Path) -> dict[str, Any] | None:
    """`directory`'s trainer_state.json (JSON, safe to read), or None when it has none."""
    path = directory / TRAINER_STATE_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # a directory, a FIFO, a dangling link: the step and progress would be guessed
        raise ModelLoadError(f"{path} is not a regular file; remove it or replace it with the Trainer's JSON state")
    state = read_json(path, "Trainer state")
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    history = state.get("log_history")
    if history is not None and not isinstance(history, list):
        raise ModelLoadError(f"{path}: log_history must be a list, got {json.dumps(history)[:40]}")
    return state


def trainer_progress(state: dict[str, Any] | None, step: int) -> tuple[int | None, float | None]:
    """(tokens seen, training loss) at `step` from a trainer_state.json, each None when not recorded.

    Tokens: the state's `num_input_tokens_seen`, which the Trainer counts only with
    ``include_num_input_tokens_seen`` (else it stays 0: unknown), or the last `log_history` entry
    at or before `step` that has it. Loss: the last logged training loss at or before `step` (the
    mean over its logging window).
    """
    if not state:
        return None, None
    history = [e for e in state.get("log_history") or [] if isinstance(e, dict) and isinstance(e.get("step"), int)
               and e["step"] <= step]
    tokens = state.get("num_input_tokens_seen")
    tokens = int(tokens) if _finite(tokens) and tokens > 0 else None
    if tokens is None:
        logged = [e["num_input_tokens_seen"] for e in history if _finite(e.get("num_input_tokens_seen"))]
        tokens = int(logged[-1]) if logged else None
    losses = [e["loss"] for e in history if _finite(e.get("loss"))]
    return tokens, float(losses[-1]) if losses else None


def _finite(value: Any) -> bool:
    """A recorded number: Python's JSON reader also gives NaN and Infinity (a diverged run's loss),
    which would reach the report as NaN or fail int()."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelLoadError(f"{path}: {key} must be an integer, got {json.dumps(value)}")
    return value
