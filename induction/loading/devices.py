"""Where a model runs and in what precision: the `--device` / `--dtype` rules, in one place.

`--device auto` means CUDA when available, else the CPU; `cuda` and `cuda:N` must name a GPU this
machine has, `mps` an available Metal device: anything else is a one-line error before any work.
`--dtype` is the parameters' precision (float32, bfloat16, float16); scores and metrics are
accumulated in float32 whatever it is.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DeviceError(ValueError):
    """A device or dtype this machine cannot provide; the message names it in one line."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device `device` names (None or "auto": CUDA when available, else the CPU)."""
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device = {text}: CUDA is not available on this machine ({build}); use device = cpu")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device = {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("device = mps: the Metal (MPS) backend is not available on this machine")
        return torch.device("mps")
    raise DeviceError(f"unknown device {text!r}; choose one of {', '.join(DEVICES)}")


def check_device_name(device: str | torch.device | None) -> str:
    """`device` as text, checked to be a device name (`DEVICES`) but not that this machine has it:
    for work that runs elsewhere (Ray workers on a cluster)."""
    text = "auto" if device is None else str(device).strip().lower()
    if text not in ("auto", "cpu", "mps") and not re.fullmatch(r"cuda(?::\d+)?", text):
        raise DeviceError(f"unknown device {text!r}; choose one of {', '.join(DEVICES)}")
    return text


def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The torch dtype `dtype` names (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise DeviceError(f"unsupported dtype {dtype}; choose one of {', '.join(DTYPES)}")
        return dtype
    text = str(dtype).replace("torch.", "").strip().lower()
    if text not in DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[text]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    param = next(iter(model.parameters()), None)
    return torch.device("cpu") if param is None else param.device


def model_dtype(model: nn.Module) -> torch.dtype:
    param = next(iter(model.parameters()), None)
    return torch.float32 if param is None else param.dtype


def place(model: nn.Module, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> nn.Module:
    """Move `model` to `device` (the auto rule when None) in `dtype` (float32 when None), in place."""
    target, precision = resolve_device(device), resolve_dtype(dtype)
    if model_device(model) != target or model_dtype(model) != precision:
        # TransformerBridge.to prints what it moved unless told not to.
        kwargs = {"print_details": False} if isinstance(model, TransformerBridge) else {}
        model.to(target, precision, **kwargs)
    return model


def placement(model: nn.Module) -> dict[str, str]:
    """{"device", "dtype"} of a model's parameters, as reports record them."""
    return {"device": str(model_device(model)), "dtype": str(model_dtype(model)).replace("torch.", "")}
