"""Pickled weights (``pytorch_model.bin``, or sharded with ``pytorch_model.bin.index.json``), read
only when the caller opts in, and only through torch's restricted unpickler.

Older models and some published checkpoints exist only as pickles. Unpickling runs whatever the file
asks for, so they are refused by default (`induction.loading.hf_dirs.safetensors_files`); with
``allow_pickle`` the weight files, and no other pickle (optimizer.pt, training_args.bin,
rng_state.pth, ...), are read with ``torch.load(weights_only=True)``, which builds tensors and
plain containers and refuses any other global, so nothing in the file is run. The state dict is then
written as safetensors into a temporary model directory, which loads as any other
(`induction.loading.models.load_hf_directory`): transformers itself never sees a pickle.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from induction.loading.native import CONFIG_FILE, ModelLoadError, one_line, read_json

PICKLE_WEIGHTS = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SHARD = re.compile(r"pytorch_model[-\w.]*\.bin")
MIN_TORCH = (2, 6)


def pickle_weight_files(directory: Path) -> list[Path]:
    """The pickle files holding `directory`'s weights: ``pytorch_model.bin``, or the shards its
    ``pytorch_model.bin.index.json`` names (all present); [] when it has neither.

    Raises:
        ModelLoadError: the index is unreadable, names a file that is not a weights shard, or one is missing.
    """
    if (directory / PICKLE_WEIGHTS).is_file():
        return [directory / PICKLE_WEIGHTS]
    index = directory / PICKLE_INDEX
    if not index.is_file():
        return []
    data = read_json(index, "pickle index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"{index} has no 'weight_map'")
    shards = sorted(set(map(str, weight_map.values())))
    bad = [s for s in shards if not PICKLE_SHARD.fullmatch(s)]
    if bad:
        raise ModelLoadError(f"{index} names {bad[0]!r}, which is not a pytorch_model*.bin shard in {directory}")
    missing = [s for s in shards if not (directory / s).is_file()]
    if missing:
        raise ModelLoadError(f"{index} names {missing[0]}, which is missing from {directory}")
    return [directory / s for s in shards]


def load_pickled_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    """The tensors of pickled weight files, read with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        ModelLoadError: torch older than 2.6, or a file the restricted unpickler refuses (it asks for
            something other than tensors and plain containers; nothing of it ran), or one that holds
            no state dict.
    """
    version = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    if version < MIN_TORCH:
        raise ModelLoadError(f"reading pickled weights needs torch >= 2.6 (its restricted unpickler); this is "
                             f"torch {torch.__version__}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            part = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # the unpickler's refusals come as several types; all mean "not loaded"
            raise ModelLoadError(f"{path}: torch's restricted unpickler refused it, nothing in it was run "
                                 f"({_reason(exc)})") from None
        if not isinstance(part, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in part.items()):
            raise ModelLoadError(f"{path} holds no state dict (a mapping of names to tensors)")
        state.update(part)
    return state


def _reason(exc: BaseException) -> str:
    """The line of torch's refusal that says what was refused ("Unsupported global: ..."), else its first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "WeightsUnpickler error" in line]
    return (named or lines or [type(exc).__name__])[0]


def pickled_as_safetensors(directory: Path, out: Path) -> Path:
    """Write `directory`'s pickled weights (`pickle_weight_files`) as ``out/model.safetensors`` with its
    config.json beside them, and return `out`: a model directory the safetensors path loads.

    Tensors are copied apart (safetensors refuses tensors that share memory, as tied embeddings do
    in a pickle) and made contiguous.

    Raises:
        ModelLoadError: as `pickle_weight_files` and `load_pickled_state_dict`; no weight files.
    """
    from safetensors.torch import save_file

    files = pickle_weight_files(directory)
    if not files:
        raise ModelLoadError(f"{directory}: no {PICKLE_WEIGHTS} or {PICKLE_INDEX}")
    state = load_pickled_state_dict(files)
    out.mkdir(parents=True, exist_ok=True)
    config = read_json(directory / CONFIG_FILE, "model config")
    if isinstance(config, dict):
        config.pop("transformers_weights", None)  # it would name the pickle
    (out / CONFIG_FILE).write_text(json.dumps(config))
    if (directory / "generation_config.json").is_file():
        shutil.copyfile(directory / "generation_config.json", out / "generation_config.json")
    try:
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
    except Exception as exc:
        raise ModelLoadError(f"{directory}: its pickled weights cannot be written as safetensors ({one_line(exc)})") from None
    return out
