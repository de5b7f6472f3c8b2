"""The jobs: one per `induction` subcommand, each `job(model or target, Config) -> Report`.

The CLI turns arguments into a Config and prints the Report; `induction demo`, the notebooks and
distributed executors call the same functions, so every report is built here and only here.

| subcommand | job | config | report |
|---|---|---|---|
| train | `train(out_dir, TrainConfig)` | `induction.training.train.TrainConfig` | `TrainReport` |
| scan | `scan(model, ScanConfig)` | `ScanConfig` | `ScanReport` |
| track | `track(run, TrackConfig)` | `TrackConfig` | `TrackReport` |
| ablate | `ablate(model, AblateConfig)` | `AblateConfig` | `HeadEffectReport` |
| patch | `patch(model, PatchConfig)` | `PatchConfig` | `HeadEffectReport` |
| fewshot | `fewshot(model, FewShotConfig)` | `FewShotConfig` | `FewShotReport` |
| sweep | `sweep(targets, SweepConfig)` | `SweepConfig` (a `TrackConfig`) | `SweepReport` |
| bench | `bench(BenchConfig)` | `BenchConfig` | `BenchReport` |

`plan_memory(model, job, cfg)` is any of these jobs' memory plan, from the model's config.json alone
(`induction.jobs.memory_plans`): what each job checks before it loads a model.
"""

from induction.jobs.ablate import AblateConfig, ablate
from induction.jobs.bench import BenchConfig, bench
from induction.jobs.fewshot import FewShotConfig, fewshot
from induction.jobs.memory_plans import plan_memory
from induction.jobs.patch import PatchConfig, patch
from induction.jobs.scan import ScanConfig, scan
from induction.jobs.sweep import SweepConfig, SweepTarget, sweep
from induction.jobs.track import TrackConfig, track
from induction.jobs.train import train
from induction.measures.metric_spec import MetricSpec

__all__ = [
    "AblateConfig",
    "BenchConfig",
    "FewShotConfig",
    "MetricSpec",
    "PatchConfig",
    "ScanConfig",
    "TrackConfig",
    "ablate",
    "bench",
    "fewshot",
    "patch",
    "plan_memory",
    "scan",
    "sweep",
    "SweepConfig",
    "SweepTarget",
    "track",
    "train",
]
