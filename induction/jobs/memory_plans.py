"""`plan_memory`: any job's memory plan (`induction.jobs.plans`) from a model's config.json, for users:
what each job checks before it loads a model, asked ahead (``device="cuda", available=80 * 10**9``)."""

from __future__ import annotations

from typing import Any

from induction.jobs.ablate import AblateConfig
from induction.jobs.fewshot import FewShotConfig
from induction.jobs.patch import PatchConfig
from induction.jobs.plans import effects_phases, fewshot_phases, memory_plan, scan_phases, track_phases
from induction.jobs.scan import ScanConfig
from induction.jobs.track import TrackConfig
from induction.loading.memory import MemoryPlan


def plan_memory(model: Any, job: str = "scan", cfg: Any = None, *, device: Any = None, dtype: Any = None,
                available: int | None = None) -> MemoryPlan | None:
    """The memory plan of `job` (scan, track, ablate, patch, fewshot) with `cfg` (None: the job's
    defaults) on `model`: a loaded bridge, a `ModelRef`, or a MODEL spec (a directory with a
    config.json, weights or not; a cached hub name), without loading it. `available`: plan for a
    device with this many bytes (``device="cuda", available=80 * 10**9`` plans for an 80 GB GPU on any
    machine); None: this machine's free memory on `device`. None when no config is found."""
    defaults = {"scan": ScanConfig, "track": TrackConfig, "ablate": AblateConfig, "patch": PatchConfig,
                "fewshot": FewShotConfig}
    if job not in defaults:
        raise ValueError(f"unknown job {job!r}; choose one of {', '.join(defaults)}")
    cfg = cfg if cfg is not None else defaults[job]()
    phases_of = {
        "scan": lambda shape, dt, budget: scan_phases(shape, cfg, dt),
        "track": lambda shape, dt, budget: track_phases(shape, cfg, dt),
        "ablate": lambda shape, dt, budget: effects_phases(shape, cfg.metric, "ablate", dt),
        "patch": lambda shape, dt, budget: effects_phases(shape, cfg.metric, cfg.method, dt, budget),
        "fewshot": lambda shape, dt, budget: fewshot_phases(shape, cfg, dt),
    }[job]
    return memory_plan(job, model, phases_of, device, dtype, available, extra_parameter_copies=int(job == "track"))
