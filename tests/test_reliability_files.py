"""Reliability, round 2 (issue 21), loading and caches: trust nothing a file says.

Cases 1-6, 9, 10 and 14 of the issue's list, built as the battery built them: a tiny Hugging Face
GPT-2 directory, a folder of revisions / Trainer checkpoints made of it, and a tiny native run,
each tampered with one way; every case ends in one line naming the file (and the tensor), or in the
numbers a fresh computation gives."""

from __future__ import annotations

import json
import os
import resource
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line as one_line
from helpers import cli
from hf_models import build_hf_model
from safetensors.torch import load_file, save_file

from induction.jobs.scan import ScanConfig
from induction.jobs.track import TrackConfig, track
from induction.loading.cache import MAX_ENTRY_BYTES, result_hash
from induction.loading.runs import run_checkpoints
from induction.measures.icl import ICLConfig
from induction.training.train import TrainConfig, train

S = ["--prompts", "8", "--icl-sequences", "8", "--bootstrap", "0", "--held-out-sequences", "4", "-q",
     "--device", "cpu", "--format", "json"]
SCAN_S = [a for a in S if a not in ("--held-out-sequences", "4")]


def assert_one_line(code, err, *needles):
    """`helpers.assert_one_line`, and no third-party pointer ("look at the above report!") alone."""
    one_line(code, err, *needles)
    assert "above report" not in err


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "gpt2"
    build_hf_model("gpt2", path)
    return path


@pytest.fixture
def hf_copy(hf_dir, tmp_path) -> Path:
    shutil.copytree(hf_dir, tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def trainer_out(hf_dir, tmp_path) -> Path:
    """OUT/checkpoint-{1,2}/ (the same weights) and the tokenizer in OUT/, as a Trainer writes them."""
    out = tmp_path / "out"
    for step in (1, 2):
        ckpt = out / f"checkpoint-{step}"
        shutil.copytree(hf_dir, ckpt, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    for name in os.listdir(hf_dir):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(hf_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(n_layers=2, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=4, n_log_checkpoints=2,
                                checkpoint_every=0, batch_size=2)
    return train(cfg, tmp_path_factory.mktemp("rel21") / "run", progress=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def tamper_header(path: Path, key: str, **fields) -> None:
    """Rewrite a safetensors header's entry for `key` (the data bytes untouched), as a hostile file would."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header[key].update(fields)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n:])


def edit_weights(path: Path, edit) -> None:
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


# ---- 1-4, 14: strict loading, one line naming the file and the tensor ----------------------------

def _missing(d):
    edit_weights(d / "model.safetensors", lambda s: s.pop("transformer.h.1.attn.c_attn.weight"))


def _one_nan(d):
    edit_weights(d / "model.safetensors", lambda s: s["transformer.h.0.mlp.c_fc.weight"].view(-1).__setitem__(5, float("nan")))


def _int_dtype(d):
    tamper_header(d / "model.safetensors", "transformer.h.0.attn.c_attn.weight", dtype="I32")


def _dtype_and_shape(d):  # F16 at twice the rows: the same bytes
    tamper_header(d / "model.safetensors", "transformer.h.0.attn.c_attn.weight", dtype="F16", shape=[128, 192])


def _fewer_layers(d):
    edit_json(d / "config.json", n_layer=1)


def _huge_layers(d):
    edit_json(d / "config.json", n_layer=100_000)


@pytest.mark.parametrize("tamper, needles", [
    (_missing, ["model.safetensors lacks tensor transformer.h.1.attn.c_attn.weight", "initialised at random"]),
    (_fewer_layers, ["config.json says n_layer=1", "holds 2 layer(s)"]),
    (_int_dtype, ["transformer.h.0.attn.c_attn.weight has dtype I32, not a floating type"]),
    (_one_nan, ["transformer.h.0.mlp.c_fc.weight has 1 NaN or infinite value(s)"]),
    (_dtype_and_shape, ["transformer.h.0.attn.c_attn.weight has shape (128, 192)", "implies (64, 192)"]),
    (_huge_layers, ["config.json says n_layer=100000", "holds 2 layer(s)"]),
], ids=["1-missing-tensor", "2-n_layer-1", "3-I32-header", "4-one-NaN", "14-dtype-and-shape", "10-n_layer-1e5"])
def test_a_tampered_hf_directory_is_refused_in_one_line(hf_copy, capsys, tamper, needles):
    tamper(hf_copy)
    code, out, err = cli(capsys, "scan", hf_copy, *SCAN_S)
    assert_one_line(code, err, str(hf_copy), *needles)
    assert out == ""


@pytest.mark.parametrize("tamper, needles", [
    (_missing, ["lacks tensor transformer.h.1.attn.c_attn.weight"]),
    (_one_nan, ["NaN or infinite"]),
    (_huge_layers, ["says n_layer=100000"]),
], ids=["1-missing-tensor", "4-one-NaN", "10-n_layer-1e5"])
def test_a_tampered_trainer_checkpoint_is_refused_fast_and_nothing_is_cached(trainer_out, capsys, tamper, needles):
    tamper(trainer_out / "checkpoint-1")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code, _, err = cli(capsys, "track", trainer_out, *S)
    assert_one_line(code, err, str(trainer_out / "checkpoint-1"), *needles)
    assert time.perf_counter() - start < 30
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024 < 512
    assert not list((trainer_out / "track").glob("*/checkpoint-1.json"))


@pytest.mark.parametrize("key, tamper, needle", [
    ("blocks.0.attn.q.weight", lambda s, k: s[k].view(-1).__setitem__(0, float("inf")), "has 1 NaN or infinite"),
    ("blocks.0.attn.k.weight", lambda s, k: s.pop(k), "lacks tensor"),
    ("unembed.weight", lambda s, k: s.__setitem__(k, s[k].to(torch.int32)), "not a floating type"),
], ids=["inf", "missing", "int"])
def test_native_checkpoints_pass_the_same_check(run_copy, capsys, key, tamper, needle):
    ckpt = run_checkpoints(run_copy)[-1][1]
    edit_weights(ckpt / "model.safetensors", lambda s: tamper(s, key))
    code, _, err = cli(capsys, "scan", run_copy, *SCAN_S)
    assert_one_line(code, err, str(ckpt / "model.safetensors"), key, needle)


@pytest.mark.parametrize("tamper, needle", [
    (None, None),
    (_missing, "lacks tensor transformer.h.1.attn.c_attn.weight"),
    (_fewer_layers, "says n_layer=1"),
    (_one_nan, "transformer.h.0.mlp.c_fc.weight has 1 NaN"),
], ids=["intact", "missing", "n_layer-1", "NaN"])
def test_a_cached_hub_revision_passes_the_same_check(hf_dir, tmp_path, monkeypatch, tamper, needle):
    """A hub model already in the Hugging Face cache (as a download leaves it) is checked like a
    local directory before `boot_transformers` reads it."""
    from huggingface_hub import constants

    from induction.loading.models import load_model
    from induction.loading.native import ModelLoadError

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--local-org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(hf_dir, snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if tamper is None:
        assert load_model("local-org/tiny", device="cpu").cfg.n_layers == 2
        return
    tamper(snapshot)
    with pytest.raises(ModelLoadError, match=needle) as caught:
        load_model("local-org/tiny", device="cpu")
    assert str(snapshot) in str(caught.value) and "\n" not in str(caught.value)


def test_a_broken_tokenizer_is_named_not_the_checkpoint(trainer_out, capsys):
    (trainer_out / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    code, _, err = cli(capsys, "scan", trainer_out, *SCAN_S)
    assert_one_line(code, err, str(trainer_out / "tokenizer.json"))
    assert "checkpoint-2" not in err


def test_a_trainer_state_that_is_a_directory_is_named(trainer_out, capsys):
    (trainer_out / "checkpoint-2" / "trainer_state.json").unlink()
    (trainer_out / "checkpoint-2" / "trainer_state.json").mkdir()
    code, _, err = cli(capsys, "track", trainer_out, *S)
    assert_one_line(code, err, str(trainer_out / "checkpoint-2" / "trainer_state.json"), "not a regular file")


# ---- 5, 6, 9: caches that prove themselves -------------------------------------------------------

def quick(**kw) -> TrackConfig:
    from induction.heads.scores import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig

    scan = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4), n_bootstrap=0),
                      icl=ICLConfig(n_sequences=4, n_bootstrap=0))
    return TrackConfig(scan=scan, held_out_sequences=4, device="cpu", **kw)


def icl_scores(report) -> list[float]:
    return [c.icl_score for c in report.checkpoints]


def test_a_changed_config_json_is_rescored_not_served_from_the_cache(run_copy):
    before = track(run_copy, quick())
    for _, ckpt in run_checkpoints(run_copy):
        edit_json(ckpt / "config.json", attn_scale=8.0)
    after = track(run_copy, quick())
    fresh = track(run_copy, quick(cache=False))
    assert after.provenance["settings"]["checkpoints_computed"] == len(fresh.checkpoints)
    assert icl_scores(after) == icl_scores(fresh)
    assert icl_scores(after) != icl_scores(before)


@pytest.mark.parametrize("change", ["layer removed", "layer added"])
def test_a_cache_entry_of_another_shape_is_recomputed_even_with_a_valid_hash(run_copy, change):
    first = track(run_copy, quick(ablate="zero"))
    for entry in (run_copy / "track").glob("*/step_*.json"):
        data = json.loads(entry.read_text())
        heads = data["result"]["heads"]
        if change == "layer removed":
            data["result"]["heads"] = [h for h in heads if h["layer"] == 0]  # still a whole grid, of 1 layer
        else:
            data["result"]["heads"] = heads + [{**h, "layer": h["layer"] + 1, "is_induction": True} for h in heads]
        data["result_sha256"] = result_hash(data["result"])
        entry.write_text(json.dumps(data))
    again = track(run_copy, quick(ablate="zero"))  # never "head (2, 0) out of range"
    assert again.provenance["settings"]["checkpoints_computed"] == len(first.checkpoints)
    assert [c.heads for c in again.checkpoints] == [c.heads for c in first.checkpoints]
    assert icl_scores(again) == icl_scores(first)


def test_cache_entries_that_are_no_small_regular_files_are_ignored_with_a_note(run_copy, capsys):
    argv = ["track", run_copy, *S]
    code, first, err = cli(capsys, *argv)
    assert code == 0, err
    entries = sorted((run_copy / "track").glob("*/step_*.json"))[:2]
    entries[0].unlink()
    os.mkfifo(entries[0])  # reading it would block forever
    entries[1].unlink()
    entries[1].symlink_to("/dev/zero")  # reading it would fill the memory
    settings = entries[0].parent / "settings.json"
    settings.unlink()
    settings.mkdir()  # cannot be written: a note, not a failure
    done: dict[str, object] = {}
    worker = threading.Thread(target=lambda: done.update(result=cli(capsys, *argv)), daemon=True)
    worker.start()
    worker.join(120)
    assert "result" in done, "track hung on a FIFO in its cache"
    code, second, err = done["result"]
    assert code == 0, err
    assert json.loads(second)["checkpoints"] == json.loads(first)["checkpoints"]
    assert "not a regular file" in err and "cannot write cache file" in err
    assert all(line.startswith("induction: note: ") for line in err.strip().splitlines())
    assert all(e.is_file() and not e.is_symlink() for e in entries)  # rewritten as entries
    code, third, err = cli(capsys, *argv)
    assert code == 0 and "not a regular file" not in err
    assert json.loads(third)["checkpoints"] == json.loads(first)["checkpoints"]
    assert json.loads(third)["provenance"]["settings"]["checkpoints_computed"] == 0


def test_an_oversized_cache_entry_is_not_read(run_copy, capsys):
    argv = ["track", run_copy, *S]
    code, first, _ = cli(capsys, *argv)
    entry = sorted((run_copy / "track").glob("*/step_*.json"))[0]
    with entry.open("r+b") as handle:
        handle.truncate(MAX_ENTRY_BYTES + 1)  # sparse: no disk used
    code, second, err = cli(capsys, *argv)
    assert code == 0 and "larger than 64 MiB" in err
    assert json.loads(second)["checkpoints"] == json.loads(first)["checkpoints"]


@pytest.mark.parametrize("err_no", [30, 28, 21], ids=["read-only", "disk-full", "is-a-directory"])
def test_a_cache_that_cannot_be_written_is_a_note_not_a_failure(run_copy, capsys, monkeypatch, err_no):
    import induction.loading.cache as cache

    def refuse(path, obj):
        raise OSError(err_no, os.strerror(err_no), str(path))

    monkeypatch.setattr(cache, "write_json_atomic", refuse)
    code, out, err = cli(capsys, "track", run_copy, *S)
    assert code == 0, err
    assert json.loads(out)["checkpoints"] and not list(run_copy.glob("track/*/step_*.json"))
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("induction: note: cannot write cache file") for line in lines)
    assert os.strerror(err_no) in lines[0]


def test_an_entry_is_keyed_by_identity_grid_and_library_versions(tmp_path):
    from induction.loading.cache import ResultCache

    result = {"heads": [{"layer": layer, "head": head} for layer in range(2) for head in range(3)]}
    identity = {"weights_sha256": "w", "config_sha256": "c", "grid": [2, 3]}
    cache = ResultCache(tmp_path / "c", {"k": 1})
    cache.write("x", identity, result)
    assert cache.read("x", identity) == result
    assert cache.read("x", {**identity, "config_sha256": "other"}) is None
    for grid in ([3, 3], [2, 2]):  # a layer short; heads the checkpoint does not have
        cache.write("y", {**identity, "grid": grid}, result)  # as a tampered entry, hash and identity intact
        assert cache.read("y", {**identity, "grid": grid}) is None
    entry = tmp_path / "c" / "x.json"
    data = json.loads(entry.read_text())
    data["libraries"]["torch"] = "0.0.1"
    entry.write_text(json.dumps(data))
    assert cache.read("x", identity) is None
