"""The one strict check every checkpoint passes before anything is computed with it.

A weights file is trusted for nothing it says about itself. Before a model is built, each
safetensors file's header (read on its own, never the tensors) must be whole and honest: every
dtype a floating one, every tensor's byte range exactly its shape times its dtype's size, the
ranges back to back and the file exactly as long as they say. Then the file is held against the
config: as many layers as config.json says (checked before anything of the config's size is
built), and every tensor the shape the config implies (from the model built on the ``meta``
device, which allocates nothing). After loading, the tensors the model holds are checked once for
NaN and inf, and (Hugging Face models) transformers' own load report must list no missing,
unexpected or mismatched tensor: transformers only warns and initialises a missing one at random.

The same functions serve native checkpoints (`induction.loading.native`), Hugging Face model
directories, Trainer checkpoints and folders of revisions (`induction.loading.models`). Every
failure is one `ModelLoadError` line naming the file and the tensor, and what to do.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from induction.loading.errors import ModelLoadError, one_line

FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
OTHER_DTYPES = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
FINITE_SLICE = 1 << 22  # elements checked for NaN/inf at a time
DAMAGED = "re-save or re-download it"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it: dtype name, shape, byte range in the data."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """A safetensors file's tensors from its header, checked to be whole and self-consistent.

    Raises:
        ModelLoadError: the file is unreadable, its header is not JSON, names an unknown dtype, or a
            tensor's byte range is not its shape times its dtype's size; the ranges overlap or leave
            gaps; the file is shorter or longer than they say.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if n < 2 or n > min(MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(f"{path} is corrupt: no valid safetensors header in its {size} bytes; {DAMAGED}")
            raw = json.loads(handle.read(n))
    except ModelLoadError:
        raise
    except PermissionError:
        raise ModelLoadError(f"{path}: cannot read it: permission denied; check its permissions") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path} is a directory, not a safetensors file") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(f"{path}: its safetensors header is not valid JSON; {DAMAGED}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: its safetensors header is not a JSON object; {DAMAGED}")
    entries = {}
    for name, spec in raw.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, spec)
    end = 0
    for name, entry in sorted(entries.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if entry.start != end:
            raise ModelLoadError(f"{path}: tensor {name} starts at byte {entry.start} of the data, expected {end} "
                                 f"(overlapping or missing bytes); {DAMAGED}")
        end = entry.end
    if size != 8 + n + end:
        raise ModelLoadError(f"{path} has {size} bytes, its header describes {8 + n + end}; the file is cut short "
                             f"or has bytes appended; {DAMAGED}")
    return entries


def _entry(path: Path, name: str, spec: object) -> TensorEntry:
    if not isinstance(spec, dict):
        raise ModelLoadError(f"{path}: tensor {name} has no dtype/shape/data_offsets in the header; {DAMAGED}")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in FLOAT_DTYPES and dtype not in OTHER_DTYPES:
        raise ModelLoadError(f"{path}: tensor {name} has unknown dtype {dtype!r}; {DAMAGED}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            and isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
        raise ModelLoadError(f"{path}: tensor {name} has a malformed shape or data_offsets; {DAMAGED}")
    numel = 1
    for d in shape:
        numel *= d
    itemsize = FLOAT_DTYPES.get(dtype) or OTHER_DTYPES[dtype]
    if offsets[1] - offsets[0] != numel * itemsize:
        raise ModelLoadError(f"{path}: tensor {name} is {dtype} {tuple(shape)} ({numel * itemsize} bytes) but holds "
                             f"{offsets[1] - offsets[0]} bytes: the header lies about its dtype or shape; {DAMAGED}")
    return TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def read_headers(files: Iterable[Path]) -> dict[str, tuple[Path, TensorEntry]]:
    """Every tensor of a checkpoint's safetensors files (index files skipped): name -> (file, entry)."""
    out: dict[str, tuple[Path, TensorEntry]] = {}
    for path in files:
        if not path.name.endswith(".safetensors"):
            continue
        for name, entry in read_header(path).items():
            if name in out:
                raise ModelLoadError(f"tensor {name} is in both {out[name][0]} and {path}; remove one copy")
            out[name] = (path, entry)
    return out


def layer_count(names: Iterable[str]) -> tuple[int, str | None]:
    """How many layers the tensor names hold (the distinct numbers after the container that holds
    most numbered tensors: ``blocks.N.``, ``transformer.h.N.``, ``model.layers.N.``), and the name
    of one tensor of the highest layer."""
    by_prefix: dict[str, dict[int, str]] = {}
    for name in names:
        match = re.match(r"^(.*?)\.?(\d+)\.", name)
        if match:
            by_prefix.setdefault(match.group(1), {}).setdefault(int(match.group(2)), name)
    if not by_prefix:
        return 0, None
    layers = max(by_prefix.values(), key=len)
    top = max(layers)
    return len(layers), layers[top]


def verify_weights(
    files: Sequence[Path],
    config_file: Path,
    n_layers: int | None,
    layers_field: str,
    expected: Callable[[], dict[str, tuple[tuple[int, ...], bool]]],
    *,
    rename: Callable[[str], str | None] = lambda name: name,
    strict_names: bool = False,
    non_float_ok: Callable[[str], bool] = lambda name: False,
) -> dict[str, tuple[Path, TensorEntry]]:
    """Check a checkpoint's weights files against its config before anything of its size is built.

    Args:
        files: its safetensors files (an index among them is skipped).
        config_file: the config.json the shapes come from (named in errors).
        n_layers: the layer count the config says (None: not known, not checked).
        layers_field: the config field that says it (named in errors).
        expected: the model's tensors as the config implies them, name -> (shape, is floating);
            called only once the layer count is known to match, so a config that claims 1e5
            layers is refused before anything is built for them.
        rename: a file's tensor name -> the model's name for it (None: the model names it otherwise
            and the loader's report judges it).
        strict_names: every expected tensor must be in the files, and no other (native checkpoints,
            whose names are the bridge's own).
        non_float_ok: tensors allowed a non-floating dtype (a model's integer buffers).

    Returns:
        name -> (file, header entry) of every tensor.
    """
    headers = read_headers(files)
    if not headers:
        raise ModelLoadError(f"{', '.join(str(f) for f in files)}: holds no tensors; {DAMAGED}")
    if n_layers is not None:
        found, example = layer_count(headers)
        if found != n_layers:
            where = headers[example][0] if example else files[-1]
            held = f" (up to {example})" if example else ""
            raise ModelLoadError(f"{config_file} says {layers_field}={n_layers} but {where} holds {found} layer(s){held}; "
                                 "fix the layer count in config.json or use the weights it was saved with")
    model = expected()
    for name, (path, entry) in headers.items():
        key = rename(name)
        shape, floating = model.get(key, (None, True)) if key is not None else (None, True)
        if entry.dtype not in FLOAT_DTYPES and floating and not non_float_ok(name):
            raise ModelLoadError(f"{path}: tensor {name} has dtype {entry.dtype}, not a floating type: weights must be "
                                 f"F32, F16 or BF16 (the header may lie about the dtype); {DAMAGED}")
        if shape is not None and entry.shape != shape:
            raise ModelLoadError(f"{path}: tensor {name} has shape {entry.shape}, {config_file.name} implies {shape}; "
                                 "the weights and config.json do not belong together")
    if strict_names:
        missing = sorted(set(model) - {rename(n) for n in headers})
        if missing:
            raise ModelLoadError(f"{files[-1]} lacks tensor {missing[0]}{_more(missing)}, which {config_file} requires; "
                                 f"{DAMAGED}")
        unexpected = sorted(n for n in headers if rename(n) not in model)
        if unexpected:
            raise ModelLoadError(f"{headers[unexpected[0]][0]} holds tensor {unexpected[0]}{_more(unexpected)}, which "
                                 f"{config_file} has no place for; fix config.json or use the weights it was saved with")
    return headers


def check_load_report(info: dict[str, object], headers: dict[str, tuple[Path, TensorEntry]], files: Sequence[Path],
                      config_file: Path) -> None:
    """Refuse what transformers' `from_pretrained(..., output_loading_info=True)` only warns about:
    a tensor the config needs that the files lack (it would be initialised at random), a tensor they
    hold that the config has no place for, a tensor of the wrong shape."""
    weights = next((f for f in files if f.name.endswith(".safetensors")), files[-1])
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"{weights} lacks tensor {missing[0]}{_more(missing)}, which {config_file} requires "
                             f"(it would be initialised at random); {DAMAGED}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        where = headers[unexpected[0]][0] if unexpected[0] in headers else weights
        raise ModelLoadError(f"{where} holds tensor {unexpected[0]}{_more(unexpected)}, which {config_file} has no "
                             "place for; fix config.json or use the weights it was saved with")
    mismatched = sorted(info.get("mismatched_keys") or [], key=str)
    if mismatched:
        name = mismatched[0][0] if isinstance(mismatched[0], tuple) else mismatched[0]
        raise ModelLoadError(f"{weights}: tensor {name} does not have the shape {config_file.name} implies")
    errors = info.get("error_msgs") or []
    if errors:
        raise ModelLoadError(f"{weights}: {str(errors[0]).strip().splitlines()[0]}")


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], where: Callable[[str], Path | str]) -> None:
    """One pass over a loaded model's tensors: every floating one finite.

    Raises:
        ModelLoadError: naming the file (`where(name)`) and the first tensor with NaN or inf.
    """
    for name, tensor in tensors:
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        # In slices: a whole-tensor mask would be one more embedding-sized allocation.
        if not all(bool(torch.isfinite(part).all()) for part in tensor.detach().reshape(-1).split(FINITE_SLICE)):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelLoadError(f"{where(name)}: tensor {name} has {bad} NaN or infinite value(s) of {tensor.numel()}; "
                                 "the checkpoint is damaged or its training diverged: use an earlier checkpoint")


def file_of(headers: dict[str, tuple[Path, TensorEntry]], fallback: Path | str,
            prefix: str = "") -> Callable[[str], Path | str]:
    """name -> the file holding that tensor (a model name may lack or add the model's base prefix)."""
    def where(name: str) -> Path | str:
        for key in (name, name.removeprefix(prefix + "."), f"{prefix}.{name}"):
            if key in headers:
                return headers[key][0]
        return fallback
    return where


def hf_expected(config: object, model_class: type | None = None) -> tuple[dict[str, tuple[tuple[int, ...], bool]], object]:
    """A transformers config's tensors, name -> (shape, floating), from the model built on the meta
    device (nothing allocated), and that model (for its base prefix and ignore lists)."""
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = (model_class or AutoModelForCausalLM).from_config(config, attn_implementation="eager")
    return {k: (tuple(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()}, model


def hf_renamer(expected: dict[str, object], prefix: str) -> Callable[[str], str | None]:
    """A file's tensor name -> the meta model's (as saved, or with/without the base prefix), else
    None (renamed by transformers' conversion; its load report judges it)."""
    def rename(name: str) -> str | None:
        for key in (name, f"{prefix}.{name}", name.removeprefix(prefix + ".")):
            if key in expected:
                return key
        return None
    return rename


def ignored_unexpected(model: object) -> Callable[[str], bool]:
    """Tensors a transformers model class declares it drops on load (old GPT-2 files' ``attn.bias``
    masks): allowed their integer dtypes."""
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    return lambda name: any(p.search(name) for p in patterns)


def config_layers(config: object) -> int | None:
    """The layer count a transformers config says (`num_hidden_layers`, which every config maps its
    own field to), or None."""
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _more(items: Sequence[object]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def verify_hf_directory(directory: Path, files: Sequence[Path]) -> tuple[Any, dict[str, tuple[Path, TensorEntry]]]:
    """A Hugging Face directory's config, and its weights checked against it before the model is built
    (`induction.loading.verify.verify_weights`: layer count first, then dtypes, byte lengths and the
    shapes of the model built on the meta device); the headers, name -> (file, entry)."""
    from transformers import AutoConfig

    config_file = directory / "config.json"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.from_pretrained(str(directory))
    except Exception as exc:  # transformers raises many types; all mean "this config is unusable"
        raise ModelLoadError(f"{config_file} is not a config transformers can read ({one_line(exc)}); "
                             "fix or replace it") from None
    built: dict[str, Any] = {}

    def expected() -> dict[str, tuple[tuple[int, ...], bool]]:  # only once the layer count matches
        try:
            built["shapes"], built["model"] = hf_expected(config)
        except Exception as exc:  # a config whose sizes transformers cannot build a model of
            raise ModelLoadError(f"{config_file} does not describe a model transformers can build "
                                 f"({one_line(exc)}); fix or replace it") from None
        return built["shapes"]

    def rename(name: str) -> str | None:
        return hf_renamer(built["shapes"], built["model"].base_model_prefix)(name)

    def non_float_ok(name: str) -> bool:
        return ignored_unexpected(built["model"])(name)

    layers_field = getattr(config, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")
    headers = verify_weights(list(files), config_file, config_layers(config), layers_field, expected,
                             rename=rename, non_float_ok=non_float_ok)
    check_present(built["shapes"], built["model"], headers, rename, non_float_ok, config_file)
    return config, headers


def check_present(expected: dict[str, tuple[tuple[int, ...], bool]], model: Any,
                  headers: dict[str, tuple[Path, TensorEntry]], rename: Callable[[str], str | None],
                  ignored: Callable[[str], bool], config_file: Path) -> None:
    """Every tensor the config implies is in the files (before transformers would initialise a
    missing one at random; a hub model is loaded without its load report): under its own name, or
    tied to another (the unembedding, which Hugging Face omits), or under an older name transformers
    renames on load (`embed_out` for `lm_head`), paired here by shape."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    named = {rename(n) for n in headers}
    unmatched = [k for k in expected if k not in named and k not in tied]
    spare = [headers[n][1].shape for n in headers if rename(n) is None and not ignored(n)]
    for key in unmatched:
        if expected[key][0] in spare:
            spare.remove(expected[key][0])
            continue
        where = next(iter(headers.values()))[0]
        raise ModelLoadError(f"{where} lacks tensor {key}, which {config_file} requires (it would be initialised at "
                             f"random); {DAMAGED}")
