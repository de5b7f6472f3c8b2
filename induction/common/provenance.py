"""What every report and run records about how it was made: package versions, settings, device, time."""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from typing import Any


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("induction-toolkit", "torch", "transformer-lens", "transformers", "numpy", "einops", "plotly"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(
    model_spec: str | None,
    checkpoint: Any = None,
    seed: int | None = None,
    settings: dict[str, Any] | None = None,
    runtime_s: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """What every report records about how it was made (device and dtype: where the model ran)."""
    return {
        "versions": package_versions(),
        "model": model_spec,
        "checkpoint": checkpoint,
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "settings": settings or {},
        "runtime_s": None if runtime_s is None else round(runtime_s, 3),
        "command": " ".join(["induction", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("induction") else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
    }
