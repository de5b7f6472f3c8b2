"""`track --ray`: one Ray task per checkpoint on a local runtime (2 CPUs), the same report as the
sequential track, retried when a worker dies, resumable when the driver is interrupted, and nothing
of Ray's on stdout. One runtime serves the whole module (starting one costs ~10 s, each worker's
imports ~15 s)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from induction.cli import main
from induction.heads.config import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import ScanConfig, TrackConfig, track
from induction.jobs.executor import ExecutorError, RayExecutor
from induction.jobs.track import plan_track, score_task
from induction.measures.icl import ICLConfig
from induction.training.config import TrainConfig
from induction.training.train import train

# Ray is imported by the executor, never before it: it reads its settings when first imported.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")

CFG = TrackConfig(scan=ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4), n_bootstrap=0),
                                  icl=ICLConfig(n_sequences=4, n_bootstrap=0)),
                  held_out_sequences=4, device="cpu")


@pytest.fixture(scope="module")
def runtime():
    with RayExecutor(num_cpus=2) as executor:
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this module
        yield executor


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=6,
                                n_log_checkpoints=0, checkpoint_every=2, batch_size=2)
    return train(cfg, tmp_path_factory.mktemp("ray") / "run", progress=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def sequential(tiny_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("seq") / "run"
    shutil.copytree(tiny_run, copy)
    return track(copy, CFG).to_json()


def test_ray_track_equals_the_sequential_track_and_says_so(runtime, run_copy, sequential):
    report = track(run_copy, CFG, executor=runtime).to_json()
    assert report["checkpoints"] == sequential["checkpoints"]  # every score, to the bit
    assert report["phase_change"] == sequential["phase_change"]
    prov = report["provenance"]
    assert prov["executor"] == "ray" and prov["workers"] == 2 and prov["settings"]["checkpoints_computed"] == 4
    # Each worker wrote its checkpoint's cache entry: a second track (even without Ray) computes nothing.
    again = track(run_copy, CFG).to_json()
    assert again["provenance"]["settings"]["checkpoints_computed"] == 0 and again["checkpoints"] == sequential["checkpoints"]


def die_once(marker: str):
    """A task that kills its worker process the first time any worker runs it."""

    def task(*args):
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        return score_task(*args)

    return task


def test_a_task_whose_worker_dies_is_retried(runtime, run_copy, sequential, tmp_path, capsys):
    plan = plan_track(run_copy, CFG, remote=True)
    results = runtime.map(die_once(str(tmp_path / "died")), plan.tasks)
    assert (tmp_path / "died").exists()  # a worker did die
    assert [r["heads"] for r in results] == [c["heads"] for c in sequential["checkpoints"]]
    assert capsys.readouterr().out == ""  # Ray's "worker died ... will be retried" is not on stdout


def test_an_interrupted_driver_reruns_only_what_is_missing(runtime, run_copy, sequential):
    plan = plan_track(run_copy, CFG, remote=True)

    def stop(i, result):
        raise KeyboardInterrupt  # the user presses Ctrl-C once the first checkpoint is in

    with pytest.raises(KeyboardInterrupt):
        runtime.map(score_task, plan.tasks, on_result=stop)
    time.sleep(1.0)  # let cancelled workers go
    done = len(plan_track(run_copy, CFG).cached)
    assert 1 <= done <= 4
    report = track(run_copy, CFG, executor=runtime).to_json()
    settings = report["provenance"]["settings"]
    assert settings["checkpoints_cached"] == done and settings["checkpoints_computed"] == 4 - done
    assert report["checkpoints"] == sequential["checkpoints"]


def test_cli_json_on_stdout_is_clean(runtime, run_copy, sequential, capsys):
    argv = ["track", str(run_copy), "--ray", "--format", "json", "-q", "--device", "cpu", "--prompts", "4",
            "--bootstrap", "0", "--icl-sequences", "4", "--held-out-sequences", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # nothing but the report
    assert report["checkpoints"] == sequential["checkpoints"] and report["provenance"]["executor"] == "ray"


def test_gpu_tasks_on_a_runtime_without_gpus_are_refused(runtime):
    with pytest.raises(ExecutorError, match="has 0 GPU"):
        with RayExecutor(gpus_per_task=1):
            pass


def test_a_dead_address_fails_fast_in_one_line(capsys, run_copy):
    start = time.perf_counter()
    with pytest.raises(ExecutorError, match="no Ray cluster answers there"):
        with RayExecutor("127.0.0.1:9"):
            pass
    assert time.perf_counter() - start < 10
    code = main(["track", str(run_copy), "--ray", "127.0.0.1:9", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no Ray cluster answers" in err


def test_a_real_ray_head_passes_the_address_probe(runtime):
    """The probe that refuses a web server (tests/test_reliability_io.py) accepts Ray's own GCS."""
    import ray

    from induction.jobs.executor import _check_address

    _check_address(ray._private.worker.global_worker.node.gcs_address)


def test_without_ray_the_option_says_how_to_install_it(monkeypatch, run_copy, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code = main(["track", str(run_copy), "--ray", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install" in err and "[ray]" in err


def test_ray_track_ablate_runs_both_passes_as_tasks_and_equals_the_sequential_track(runtime, tmp_path):
    """--ablate: the per-checkpoint scoring and the joint ablation of the final induction heads both
    run as Ray tasks, give the sequential numbers to the bit, and leave their cache entries behind."""
    from helpers import save_redundant_induction_folder

    folder = save_redundant_induction_folder(tmp_path / "run", {1: 0.0, 100: 8.0})
    serial_copy = tmp_path / "serial"
    shutil.copytree(folder, serial_copy)
    cfg = replace(CFG, ablate="zero", ablate_draws=2)
    parallel = track(folder, cfg, executor=runtime).to_json()
    serial = track(serial_copy, cfg).to_json()
    assert parallel["checkpoints"] == serial["checkpoints"] and parallel["ablation"] == serial["ablation"]
    assert parallel["checkpoints"][-1]["ablation"]["induction_set"]["joint_effect"] > 4.0
    assert parallel["provenance"]["settings"]["induction_set_computed"] == 2
    again = track(folder, cfg).to_json()  # the workers wrote both passes' entries
    settings = again["provenance"]["settings"]
    assert (settings["checkpoints_computed"], settings["induction_set_computed"]) == (0, 0)
    assert again["checkpoints"] == serial["checkpoints"]


def test_ray_sweep_equals_the_sequential_sweep(runtime, run_copy, tiny_run, tmp_path):
    from induction.jobs import SweepConfig, SweepTarget, sweep

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    targets = [SweepTarget(str(run_copy)), SweepTarget(str(other))]
    cfg = SweepConfig(track=replace(CFG, cache=False))
    parallel = sweep(targets, cfg, executor=runtime).to_json()
    serial = sweep(targets, cfg).to_json()
    assert parallel["runs"] == serial["runs"] and parallel["provenance"]["executor"] == "ray"
