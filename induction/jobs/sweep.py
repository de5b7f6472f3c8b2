"""`sweep`: many models, runs or revisions x scan or track, in one report (`induction sweep TARGETS`).

TARGETS is a comma-separated list of MODEL specs / run directories, or a TOML file::

    job = "track"                      # or "scan"; the --job option overrides it
    [[runs]]
    path = "runs/seed0"
    label = "seed 0"                   # optional: how tables and figures name it
    [[runs]]
    path = "EleutherAI/pythia-70m"
    revisions = ["step1000", "step2000", "step4000"]
    [[runs]]
    path = "EleutherAI/pythia-160m"
    revisions = "auto"                 # a log-spaced pick of the hub repository's step branches

Every run is planned first (`induction.jobs.track.plan_track`: its checkpoints and what its cache
already holds), then all the missing checkpoints of all runs go to one executor: this process, or
one Ray task each (`--ray`), so a cluster works on every run at once (with `--ablate`, then the joint
ablations of every run's final induction heads, `induction.jobs.track.run_plans`). The per-run
reports are the ones `track` (or `scan`) gives for that run alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import tomllib
import torch

from induction.common.checks import check_choice
from induction.common.provenance import provenance
from induction.jobs.executor import Executor, LocalExecutor
from induction.jobs.scan import ScanConfig, scan
from induction.jobs.track import TrackConfig, plan_track, run_plans
from induction.loading.devices import resolve_device, resolve_dtype
from induction.loading.models import ModelRef, looks_local
from induction.loading.revisions import AUTO
from induction.reports.scan import ScanReport
from induction.reports.sweep import SweepReport

JOBS = ("track", "scan")


@dataclass(frozen=True)
class SweepTarget:
    """One entry of a sweep: a MODEL spec or run, its revisions (if any), and its label."""

    path: str
    revisions: tuple[str, ...] | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.path


@dataclass
class SweepConfig:
    """Settings of `sweep`.

    Attributes:
        job: ``track`` (every checkpoint of every run) or ``scan`` (each model once).
        track: job = track: each run's settings (`TrackConfig`: scoring, device, dtype, hub).
        scan: job = scan: each model's scan (`ScanConfig`).
        device, dtype: job = scan: where and in what precision the models run (`induction.loading.devices`).
        offline, allow_pickle: job = scan: how hub models and pickled weights are read (`load_model`).
    """

    job: str = "track"
    track: TrackConfig = field(default_factory=TrackConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    device: str | None = None
    dtype: str | None = None
    offline: bool = False
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        check_choice("sweep job", self.job, JOBS, field="job")

    @property
    def placement(self) -> tuple[str | None, str | None]:
        """The device and dtype the job's models run on."""
        return (self.track.device, self.track.dtype) if self.job == "track" else (self.device, self.dtype)

    def settings(self) -> dict[str, Any]:
        """What the report's provenance records: the job's own settings."""
        if self.job == "track":
            return {"job": "track", "track": self.track.to_dict()}
        return {"job": "scan", "scan": self.scan.to_dict(), "device": self.device, "dtype": self.dtype,
                "offline": self.offline, "allow_pickle": self.allow_pickle}


def read_targets(text: str | os.PathLike[str]) -> tuple[list[SweepTarget], str | None]:
    """The targets TARGETS names (a comma list, or a .toml file) and the file's `job`, if it sets one."""
    text = str(text)
    if text.endswith(".toml"):
        path = Path(text)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"sweep file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"sweep file {path} is not valid TOML ({str(exc).splitlines()[0]})") from None
        runs = data.get("runs")
        if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) and isinstance(r.get("path"), str) for r in runs):
            raise ValueError(f"sweep file {path}: expected [[runs]] tables, each with a path")
        unknown = sorted({k for r in runs for k in r} - {"path", "revisions", "label"})
        if unknown:
            raise ValueError(f"sweep file {path}: unknown key(s) in [[runs]]: {', '.join(unknown)}")
        for i, r in enumerate(runs, 1):
            _check_run_table(path, i, r)
        base = path.parent
        targets = [SweepTarget(path=_relative_to(r["path"].strip(), base, path), label=r.get("label"),
                               revisions=_revisions(r.get("revisions"))) for r in runs]
        job = data.get("job")
        if job is not None:
            check_choice("sweep job", job, JOBS)
    else:
        targets = [SweepTarget(path=p.strip()) for p in text.split(",") if p.strip()]
        job = None
    if not targets:
        raise ValueError("give at least one model or run to sweep")
    _check_distinct(targets)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep targets repeated: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return targets, job


def _revisions(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (AUTO,) if value == AUTO else tuple(value)


def _check_run_table(path: Path, index: int, run: dict[str, Any]) -> None:
    """One [[runs]] table's types: a non-empty path, a label string, a non-empty list of revision
    names (a bare string would be split into its characters, a number is no revision name)."""
    where = f"sweep file {path}: [[runs]] table {index}"
    if not run["path"].strip():
        raise ValueError(f"{where}: path is empty")
    label = run.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"{where}: label must be a non-empty string, got {label!r}")
    revisions = run.get("revisions")
    if revisions is not None and revisions != AUTO and (not isinstance(revisions, list) or not revisions
                                  or not all(isinstance(r, str) and r.strip() for r in revisions)):
        raise ValueError(f"{where}: revisions must be a non-empty list of revision names "
                         f"(revisions = [\"step1000\"]) or \"auto\", got {revisions!r}")


def _relative_to(path: str, base: Path, sweep_file: Path) -> str:
    """A path in a sweep file is relative to the file (README), never to the working directory; a
    name that is no path there and looks like none (``gpt2``, ``org/name``) is a hub name.

    Raises:
        ValueError: a local path (absolute, ``./x``, ``a/b/c``, or a name that exists only in the
            working directory) that does not exist relative to the file, naming where it was looked for.
    """
    given = Path(path).expanduser()
    resolved = given if given.is_absolute() else base / given
    if resolved.exists():
        return str(resolved)
    if given.is_absolute() or looks_local(path) or given.exists():
        raise ValueError(f"sweep file {sweep_file}: run path {path!r} is relative to the file, and "
                         f"{os.path.normpath(os.path.abspath(resolved))} does not exist; fix the path")
    return path


def _check_distinct(targets: Sequence[SweepTarget]) -> None:
    """Refuse two targets that are the same run (the same folder however written, with the same
    revisions): its curves would be shown twice, as if two runs agreed, and every checkpoint scored twice."""
    seen: dict[tuple[str, tuple[str, ...] | None], SweepTarget] = {}
    for t in targets:
        local = Path(t.path).expanduser()
        key = (os.path.realpath(local) if local.exists() else t.path, t.revisions)
        if key in seen:
            first = seen[key]
            raise ValueError(f"sweep target repeated: {first.name!r} and {t.name!r} are the same run ({key[0]}); "
                             "list it once")
        seen[key] = t


def check_scan_targets(targets: Sequence[SweepTarget]) -> None:
    """Before any model is scanned: every local target exists, and each names one model (a scan
    takes one revision per target; a list of them is what `--job track` scores)."""
    for t in targets:
        if not Path(t.path).expanduser().exists() and looks_local(t.path):
            raise ValueError(f"sweep target {t.path} does not exist")
        if t.revisions is not None and (len(t.revisions) > 1 or t.revisions == (AUTO,)):
            raise ValueError(f"sweep target {t.name}: job = scan scans one model per target, but it lists "
                             f"{len(t.revisions)} revisions; use job = track, or one [[runs]] table per revision")


def scan_target(ref: ModelRef, cfg: ScanConfig, threads: int) -> ScanReport:
    """One model's scan (the task of a scan sweep; runs in this process or a Ray worker)."""
    torch.set_num_threads(threads)
    return scan(ref, cfg)


def sweep(targets: Sequence[SweepTarget], cfg: SweepConfig | None = None, *, progress: bool = False,
          executor: Executor | None = None) -> SweepReport:
    """Run `cfg.job` on every target (module docstring) and gather the reports."""
    cfg = cfg or SweepConfig()
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    remote = executor.name != "local"
    device, dtype = cfg.placement
    if not remote:
        resolve_device(device), resolve_dtype(dtype)  # fail before any work
    tracks: list[Any] = []
    scans: list[ScanReport] = []
    if cfg.job == "track":
        plans = [plan_track(t.path, replace(cfg.track, revisions=t.revisions or cfg.track.revisions), remote)
                 for t in targets]
        tracks = run_plans(plans, executor, start, progress, desc="sweeping checkpoints")
    else:
        check_scan_targets(targets)
        refs = [ModelRef(t.path, revision=(t.revisions or (None,))[0], device=device, dtype=dtype,
                         offline=cfg.offline, allow_pickle=cfg.allow_pickle) for t in targets]
        tasks = [(ref, cfg.scan, torch.get_num_threads()) for ref in refs]
        scans = executor.map(scan_target, tasks, progress=progress, desc="scanning models", unit="model")
    settings = {**cfg.settings(),
                "targets": [{"path": t.path, "revisions": list(t.revisions or []), "label": t.label} for t in targets]}
    seed = (cfg.track.scan if cfg.job == "track" else cfg.scan).seed
    prov = provenance(None, None, seed, settings, time.perf_counter() - start,
                      device=device or "auto", dtype=dtype or "float32")
    prov.update(executor.describe())
    return SweepReport(job=cfg.job, labels=[t.name for t in targets], tracks=tracks, scans=scans, provenance=prov)
