"""The embedded default models: small toy models the toolkit trains itself on first use, then caches.

Nothing is downloaded. `default_run("2l")` returns the run directory of the default 2-layer
attention-only model (which forms induction heads), `"1l"` its 1-layer control (which cannot), and
`"fewshot"` a 2-layer model trained on the few-shot stream, `"prior"` one trained on the learned-prior
stream and `"tasks"` a 2-layer model with MLPs trained on the task-inference stream (each as
`induction train --data KIND` makes it, `TrainConfig.for_data`). Runs live under `$INDUCTION_CACHE`
(default `~/.cache/induction`), keyed by a hash of their training config, and an interrupted
training resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from transformer_lens.model_bridge import TransformerBridge

from induction.loading.models import load_model
from induction.loading.runs import read_manifest
from induction.training.config import ModelConfig, TrainConfig
from induction.training.train import train

CACHE_ENV = "INDUCTION_CACHE"
# Trains every default model from another seed (a stand-in for another CPU, whose float reductions
# differ in the last digits): the test suite's `--toy-seed N` sets it, so that tests on trained toys
# assert only what the recipe guarantees at any seed. Unset: seed 0, the embedded default.
SEED_ENV = "INDUCTION_DEFAULT_SEED"


def _fewshot_config() -> TrainConfig:
    from induction.inputs.streams import training_data

    model = ModelConfig()
    return TrainConfig(model=model, data=training_data("fewshot", model.d_vocab, model.n_ctx))


DEFAULTS: dict[str, Callable[[], TrainConfig]] = {
    "2l": TrainConfig,
    "1l": lambda: TrainConfig(model=ModelConfig(n_layers=1)),
    "fewshot": _fewshot_config,
    "prior": lambda: TrainConfig.for_data("prior"),
    "tasks": lambda: TrainConfig.for_data("tasks"),
}


def cache_dir() -> Path:
    from induction.common.fileio import induction_cache

    return induction_cache()


def config_key(cfg: TrainConfig) -> str:
    fields_ = asdict(cfg)
    if not fields_.get("interventions"):  # the field came later: runs without interventions keep their key
        fields_.pop("interventions", None)
    blob = json.dumps(fields_, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_seed() -> int:
    """The training seed of the default models: 0, or `$INDUCTION_DEFAULT_SEED`."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise ValueError(f"{SEED_ENV} must be a non-negative integer, got {raw!r}")
    return int(raw)


def default_config(name: str = "2l") -> TrainConfig:
    if name not in DEFAULTS:
        raise ValueError(f"unknown default model {name!r}; choose one of {', '.join(DEFAULTS)}")
    cfg = DEFAULTS[name]()
    seed = default_seed()
    return cfg if seed == cfg.seed else replace(cfg, seed=seed)


def run_path(name: str = "2l") -> Path:
    """Where default model `name`'s run lives in the cache (trained or not)."""
    return cache_dir() / f"{name}-{config_key(default_config(name))}"


def run_is_complete(run: Path, cfg: TrainConfig) -> bool:
    try:
        checkpoints = read_manifest(run)["checkpoints"]
    except (OSError, ValueError):
        return False
    return bool(checkpoints) and checkpoints[-1]["step"] >= cfg.steps


def default_run(name: str = "2l", progress: bool = True) -> Path:
    """The run directory of default model `name`, training it first if it is not cached.

    Two processes (a notebook and the demo, say) never train the same run at once: the second
    waits for the run's lock (`induction.loading.runs.run_lock`), then finds the run complete.
    """
    cfg = default_config(name)
    run = run_path(name)
    if not run_is_complete(run, cfg):
        train(cfg, run, resume=True, progress=progress, wait=True)
    return run


def default_model(name: str = "2l", progress: bool = True) -> TransformerBridge:
    """The final checkpoint of default model `name` (see `default_run`), in eval mode."""
    return load_model(default_run(name, progress))
