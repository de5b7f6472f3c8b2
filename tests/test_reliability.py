"""Reliability (issue 11): one writer per run, sizes checked before allocating, caches and manifests
validated, files readable by others, and every failure one line naming the file or option."""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import stat
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line, cli

from induction.loading.cache import ResultCache, result_hash
from induction.loading.models import load_model
from induction.loading.runs import MANIFEST_FILE, RESUME_DIR, read_manifest, run_checkpoints, run_lock
from induction.training.config import TrainConfig
from induction.training.train import train

TINY = ["--layers", "1", "--d-model", "16", "--heads", "2", "--ctx", "16", "--vocab", "16", "--steps", "4",
        "--log-checkpoints", "2", "--checkpoint-every", "0", "--batch-size", "2"]


def tiny_config(**kw) -> TrainConfig:
    base = dict(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=4, n_log_checkpoints=2,
                checkpoint_every=0, batch_size=2)
    return TrainConfig.from_flat(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train(tiny_config(), tmp_path_factory.mktemp("rel") / "run", progress=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"




# ---- 1. one writer per run directory -------------------------------------------------------------

def test_a_second_writer_is_refused_and_the_run_is_untouched(run_copy, capsys):
    before = {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()}
    with run_lock(run_copy):  # another process is training into it
        code, _, err = cli(capsys, "train", *TINY, "--seed", "1", "--out", run_copy, "-q")
        assert_one_line(code, err, "is being written by another process")
        code, _, err = cli(capsys, "train", *TINY, "--resume", "--out", run_copy, "-q")
        assert_one_line(code, err, "is being written by another process")
    assert {p: p.read_bytes() for p in run_copy.rglob("*") if p.is_file()} == before


# ---- 2. sizes in config.json are checked against the weights before allocating -------------------

@pytest.mark.parametrize("field, value, message", [
    ("d_vocab", 20_000_000, "embed.weight has shape"),
    ("d_vocab", 1_000_000_000, "embed.weight has shape"),
    ("n_heads", 1_000_000, "has shape"),
    ("n_layers", 100_000, "says n_layers=100000"),
])
def test_oversized_config_fails_fast_without_allocating(run_copy, capsys, field, value, message):
    ckpt = run_checkpoints(run_copy)[-1][1]
    config = json.loads((ckpt / "config.json").read_text())
    config[field] = value
    (ckpt / "config.json").write_text(json.dumps(config))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code, _, err = cli(capsys, "scan", run_copy, "-q", "--device", "cpu")
    assert_one_line(code, err, message)
    assert time.perf_counter() - start < 10
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grew_mib < 512, f"peak memory grew by {grew_mib:.0f} MiB"


# ---- 3. counts are checked against memory ----------------------------------------------------------

def test_impossible_batch_is_refused_before_anything_is_written(tmp_path, capsys):
    code, _, err = cli(capsys, "train", *TINY, "--batch-size", "1000000000", "--out", tmp_path / "D", "-q")
    assert_one_line(code, err, "needs about", "GiB of memory")
    assert not (tmp_path / "D").exists()


@pytest.mark.parametrize("argv, option", [
    (["scan", "{run}", "--prompts", "1000000000"], "--prompts 1000000000"),
    (["scan", "{run}", "--icl-sequences", "1000000000"], "--icl-sequences 1000000000"),
    (["track", "{run}", "--prompts", "1000000000", "--no-cache"], "--prompts 1000000000"),
    (["track", "{run}", "--held-out-sequences", "1000000000", "--no-cache"], "--held-out-sequences 1000000000"),
    (["fewshot", "{run}", "--prompts", "1000000000"], "--prompts 1000000000"),
    (["ablate", "{run}", "--sequences", "1000000000"], "--sequences 1000000000"),
    (["patch", "{run}", "--sequences", "1000000000"], "--sequences 1000000000"),
])
def test_impossible_counts_are_refused_fast_at_bounded_memory(run_copy, capsys, argv, option):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code, _, err = cli(capsys, *[a.format(run=run_copy) for a in argv], "-q", "--device", "cpu")
    assert_one_line(code, err, option, "GiB of memory")
    assert time.perf_counter() - start < 10
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 < 256


def test_large_counts_that_fit_still_run(run_copy, capsys):
    code, out, err = cli(capsys, "scan", run_copy, "--prompts", "3000", "--bootstrap", "50", "--no-icl", "-q",
                         "--device", "cpu", "--format", "json")
    assert code == 0, err
    assert len(json.loads(out)["heads"]) == 2


def test_a_run_that_never_saved_a_checkpoint_can_be_replaced_or_resumed(tmp_path, capsys):
    aborted = tmp_path / "D"
    aborted.mkdir()
    (aborted / MANIFEST_FILE).write_text(json.dumps({"checkpoints": [], "train_config": {"n_layers": 1, "steps": 9}}))
    code, _, err = cli(capsys, "train", *TINY, "--out", aborted, "-q")  # a rerun replaces it
    assert code == 0, err
    assert [s for s, _ in run_checkpoints(aborted)][-1] == 4
    (aborted / MANIFEST_FILE).write_text(json.dumps({"checkpoints": [], "train_config": {"n_layers": 1, "steps": 9}}))
    code, _, err = cli(capsys, "train", *TINY, "--resume", "--out", aborted, "-q")  # so does --resume
    assert code == 0, err
    assert read_manifest(aborted)["complete"]


# ---- 4. cached track results are validated ---------------------------------------------------------

@pytest.mark.parametrize("tamper", ["cut", "empty", "string", "nan"])
def test_tampered_track_cache_entries_are_recomputed(run_copy, capsys, tamper):
    argv = ["track", run_copy, "-q", "--prompts", "4", "--bootstrap", "0", "--icl-sequences", "4",
            "--held-out-sequences", "4", "--format", "json", "--device", "cpu"]
    code, first, err = cli(capsys, *argv)
    assert code == 0, err
    entry = next((run_copy / "track").glob("*/step_000004.json"))
    cached = json.loads(entry.read_text())
    if tamper == "cut":
        cached["result"]["heads"] = cached["result"]["heads"][:3]
    elif tamper == "empty":
        cached["result"] = {}
    elif tamper == "string":
        cached["result"] = "oops"
    else:
        cached["result"]["heads"][0]["copying"] = float("nan")
        cached["result_sha256"] = result_hash(cached["result"])  # a consistent hash does not make it valid
    entry.write_text(json.dumps(cached))
    code, second, err = cli(capsys, *argv)
    assert code == 0, err
    a, b = json.loads(first), json.loads(second)
    assert b["checkpoints"] == a["checkpoints"]  # recomputed, not trusted
    assert len(b["checkpoints"][-1]["heads"]) == 2


def test_cache_rejects_an_edited_result(tmp_path):
    cache = ResultCache(tmp_path / "c", {"k": 1})
    cache.write("x", {"id": 1}, {"a": 1.0})
    assert cache.read("x", {"id": 1}) == {"a": 1.0}
    path = tmp_path / "c" / "x.json"
    data = json.loads(path.read_text())
    data["result"]["a"] = 2.0
    path.write_text(json.dumps(data))
    assert cache.read("x", {"id": 1}) is None


# ---- 5. file modes and permission errors -------------------------------------------------------------

def test_every_file_of_a_run_gets_the_users_umask(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    for path in tiny_run.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode == expected, f"{path.relative_to(tiny_run)}: {oct(mode)} != {oct(expected)}"


def test_permission_denied_is_named(run_copy, capsys, monkeypatch):
    real_open = Path.open

    def denied(self, *a, **k):  # as root, chmod 000 would not deny anything
        if self.name == "model.safetensors":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", denied)
    code, _, err = cli(capsys, "scan", run_copy, "-q", "--device", "cpu")
    assert_one_line(code, err, "permission denied", "model.safetensors")


# ---- 6. token frequency tables ---------------------------------------------------------------------

@pytest.mark.parametrize("counts, bad", [([1, -2, 3], "-2"), ([1, float("nan")], "nan"), ([float("inf"), 1], "inf")])
def test_freqs_must_be_finite_and_non_negative(run_copy, tmp_path, capsys, counts, bad):
    path = tmp_path / "freqs.json"
    path.write_text(json.dumps(counts + [1] * (16 - len(counts))))
    code, _, err = cli(capsys, "scan", run_copy, "--freqs", path, "--exclude-top", "1", "-q", "--device", "cpu")
    assert_one_line(code, err, "--freqs", bad, "finite and >= 0")


# ---- 7. errors name the option or the file ----------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["ablate", "{run}", "--sequences", "0"], "--sequences must be >= 1"),
    (["ablate", "{run}", "--sequences", "-2"], "--sequences must be >= 1"),
    (["scan", "{run}", "--icl-sequences", "0"], "--icl-sequences must be >= 1"),
])
def test_bad_counts_name_the_option(run_copy, capsys, argv, message):
    code, _, err = cli(capsys, *[a.format(run=run_copy) for a in argv], "-q", "--device", "cpu")
    assert_one_line(code, err, message)


@pytest.mark.parametrize("damage, message", [
    ("garbage optimizer", "optimizer.safetensors is corrupt"),
    ("truncated state", "state.json is not valid JSON"),
    ("empty state", "state.json lacks param_groups"),
])
def test_damaged_resume_state_is_named(tmp_path, capsys, damage, message):
    run = train(tiny_config(steps=6), tmp_path / "run", progress=False, stop_after=4)
    state = next((run / RESUME_DIR).iterdir())
    if damage == "garbage optimizer":
        (state / "optimizer.safetensors").write_bytes(b"\xff" * 64)
    elif damage == "truncated state":
        (state / "state.json").write_text((state / "state.json").read_text()[:20])
    else:
        (state / "state.json").write_text("{}")
    code, _, err = cli(capsys, "train", "--resume", "--out", run, "-q")
    assert_one_line(code, err, message)


# ---- 8. manifest paths stay inside their run ---------------------------------------------------------

def test_manifest_paths_outside_the_run_are_refused(run_copy, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    manifest = read_manifest(run_copy)
    manifest["checkpoints"][-1]["path"] = "../other/checkpoints/step_000004"
    (run_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    for argv in (["scan", run_copy], ["track", run_copy], ["train", "--resume", "--out", run_copy]):
        code, _, err = cli(capsys, *argv, "-q", "--device", "cpu")
        assert_one_line(code, err, "outside the run's checkpoints/ folder")


# ---- 9. resume repairs a damaged meta.json -------------------------------------------------------------

def test_resume_repairs_a_truncated_meta_and_the_run_is_readable(tmp_path, capsys):
    run = train(tiny_config(steps=6, checkpoint_every=2), tmp_path / "run", progress=False, stop_after=4)
    reference = train(tiny_config(steps=6, checkpoint_every=2), tmp_path / "ref", progress=False)
    last = run_checkpoints(run)[-1][1]
    (last / "meta.json").write_text('{"step": 4, "tok')
    code, _, err = cli(capsys, "train", "--resume", "--out", run, "-q", "--device", "cpu")
    assert code == 0, err
    assert read_manifest(run)["checkpoints"] == read_manifest(reference)["checkpoints"]
    for (_, a), (_, b) in zip(run_checkpoints(run), run_checkpoints(reference)):
        assert (a / "meta.json").read_text() == (b / "meta.json").read_text()
    assert load_model(run, checkpoint=4, device="cpu").induction_info.meta["step"] == 4
    assert torch.equal(load_model(run, device="cpu").W_Q, load_model(reference, device="cpu").W_Q)


# ---- beyond the list: out-of-memory ------------------------------------------------------------------

@pytest.mark.parametrize("error, needle", [
    (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79 GiB total)"),
     "out of GPU memory (CUDA out of memory)"),
    (lambda: MemoryError(), "out of memory on this machine"),
])
def test_out_of_memory_is_one_line_with_what_to_do(run_copy, capsys, monkeypatch, error, needle):
    def explode(*a, **k):
        raise error()

    monkeypatch.setattr(importlib.import_module("induction.jobs.scan"), "score_heads", explode)
    code, _, err = cli(capsys, "scan", run_copy, "-q", "--device", "cpu")
    assert_one_line(code, err, needle, "--batch-size")


def test_json_reports_are_strict_json_with_null_for_numbers_not_finite():
    """A diverged run's NaN loss (or any unmeasured number) is null in --format json, never NaN."""
    import math

    import numpy as np
    import torch

    from induction.reports.base import format_report

    class Report:
        title, columns = "t", ()

        def rows(self):
            return []

        def summary(self):
            return []

        def to_json(self):
            return {"loss": float("nan"), "curve": torch.tensor([1.0, float("inf")]), "x": np.float32("nan"),
                    "ok": [1, 2.5, None, "s"]}

    def no_constants(name):
        raise AssertionError(f"{name} in JSON output")

    data = json.loads(format_report(Report(), "json"), parse_constant=no_constants)
    assert data == {"loss": None, "curve": [1.0, None], "x": None, "ok": [1, 2.5, None, "s"]}
    assert not math.isnan(data["ok"][1])
