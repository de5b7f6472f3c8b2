"""Tracking a Hugging Face Trainer output and a folder of revision directories (CONTRACT, MODEL 4).

The checkpoints are tiny GPT-2s trained here with plain torch/transformers code
(scripts/train_hf_gpt2.py) and written as a Trainer writes them; every pickle beside them is
replaced by one that runs code when unpickled. Tracking must read config.json and safetensors
only: every unpickling entry point is made to raise and record the attempt, and the planted
pickles leave a marker file if anything executes them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import CallCounter, save_tiny_hf_gpt2
from safetensors.torch import load_file, save_file

from induction.cli import main
from induction.heads.config import ScoreConfig
from induction.heads.scores import score_heads
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import ScanConfig, TrackConfig, track
from induction.loading.hf_dirs import (
    folder_checkpoints,
    pending_reason,
    safetensors_size_problem,
    trainer_progress,
    weights_sha256,
)
from induction.loading.models import load_hf_directory, load_model
from induction.loading.native import ModelLoadError
from induction.measures.icl import ICLConfig, icl_score

ROOT = Path(__file__).resolve().parents[1]
track_job = importlib.import_module("induction.jobs.track.tasks")  # what runs per checkpoint


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


hf_train = load_script("train_hf_gpt2")
PICKLES = hf_train.TRAINER_PICKLES


# ---- the trap -------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs code: it creates the file `marker` (a harmless stand-in for an exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plant_pickles(checkpoint: Path, marker: Path) -> None:
    """Replace the Trainer's pickles with code-running ones: torch.save's zip format for .pt/.pth,
    a bare pickle for training_args.bin (what each loader would meet)."""
    for name in PICKLES:
        if name.endswith((".pt", ".pth")):
            torch.save({"state": _Payload(marker)}, checkpoint / name)
        else:
            (checkpoint / name).write_bytes(pickle.dumps(_Payload(marker)))


def refuse_unpickling(monkeypatch) -> list[str]:
    """Make every unpickling entry point raise; the returned list records each attempt."""
    attempts: list[str] = []

    def refuse(name):
        def refused(*args, **kwargs):
            attempts.append(f"{name}({str(args[0])[:80] if args else ''})")
            raise RuntimeError(f"unpickling attempted via {name}")
        return refused

    for module, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads"),
                         (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    return attempts


@pytest.fixture
def unpickling(monkeypatch) -> list[str]:
    """No unpickling for the whole test (`refuse_unpickling`)."""
    return refuse_unpickling(monkeypatch)


def test_the_trap_catches_unpickling(tmp_path, unpickling):
    """The guard and the planted pickles can fail: loading one is caught and recorded."""
    (tmp_path / "ck").mkdir()
    plant_pickles(tmp_path / "ck", tmp_path / "marker")
    for name in PICKLES:
        with pytest.raises(RuntimeError, match="unpickling attempted"):
            torch.load(tmp_path / "ck" / name, weights_only=False)
    assert len(unpickling) == len(PICKLES) and not (tmp_path / "marker").exists()


def test_planted_pickles_really_run_code(tmp_path):
    """Without the guard, unpickling a planted file executes its payload (what the guard prevents)."""
    (tmp_path / "ck").mkdir()
    plant_pickles(tmp_path / "ck", tmp_path / "marker")
    pickle.loads((tmp_path / "ck" / "training_args.bin").read_bytes())
    assert (tmp_path / "marker").exists()


# ---- a Trainer-style run ------------------------------------------------------------------------

TINY = dict(n_layer=2, n_embd=32, n_head=4, n_ctx=32, vocab_size=32, min_segment=4, steps=6, batch_size=4, lr=1e-2,
            warmup_steps=0, n_log_checkpoints=0, save_every=2, logging_steps=1)


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory) -> Path:
    """OUT/checkpoint-{2,4,6}/ + the final model and tokenizer in OUT/, with planted pickles."""
    out = tmp_path_factory.mktemp("hf") / "out"
    hf_train.train(hf_train.HFGPT2Config(**TINY), out, progress=False)
    for step in (2, 4, 6):
        plant_pickles(out / f"checkpoint-{step}", out.parent / "marker")
    return out


def quick_track_config(**overrides) -> TrackConfig:
    scan = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0),
                      icl=ICLConfig(n_sequences=8, n_bootstrap=0))
    return TrackConfig(**{"scan": scan, "held_out_sequences": 8, **overrides})




def test_trainer_output_is_tracked_from_safetensors_only(trainer_run, tmp_path, monkeypatch, unpickling):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    assert sorted(p.name for p in (out / "checkpoint-4").iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "trainer_state.json", *PICKLES])
    cfg = quick_track_config()
    counter = CallCounter(monkeypatch, track_job)
    report = track(out, cfg)
    assert unpickling == [] and not (trainer_run.parent / "marker").exists()
    assert counter.calls == 3
    assert [c.step for c in report.checkpoints] == [2, 4, 6]  # the final model in OUT/ is not a checkpoint
    # What the run recorded: tokens = steps x batch x context; loss = the logged loss of that step.
    history = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    for c in report.checkpoints:
        assert c.tokens_seen == c.step * TINY["batch_size"] * TINY["n_ctx"]
        assert c.loss == next(e["loss"] for e in history if e["step"] == c.step)
    # The same numbers as scanning each checkpoint directly.
    for c in report.checkpoints:
        model = load_model(out / f"checkpoint-{c.step}")
        assert c.heads == score_heads(model, cfg.scan.detector).to_records()
        assert c.icl_score == icl_score(model, cfg.scan.icl).score
    assert report.checkpoints[0].heads != report.checkpoints[-1].heads  # training moved the weights
    # Cached in OUT/track/: a second track scores nothing; a retrained checkpoint is rescored.
    again = track(out, cfg)
    assert counter.calls == 3 and again.to_json()["checkpoints"] == report.to_json()["checkpoints"]
    weights = out / "checkpoint-4" / "model.safetensors"
    state = load_file(str(weights))
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in state.items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    third = track(out, cfg)
    assert counter.calls == 4
    assert third.checkpoints[1].heads != report.checkpoints[1].heads
    assert third.checkpoints[0].heads == report.checkpoints[0].heads
    assert unpickling == [] and not (trainer_run.parent / "marker").exists()


def test_checkpoint_loads_equal_transformers_and_take_the_tokenizer_from_out(trainer_run, unpickling):
    from transformers import GPT2LMHeadModel

    directory = trainer_run / "checkpoint-4"
    bridge = load_model(trainer_run, checkpoint=4)
    assert bridge.induction_info.checkpoint == 4 and bridge.induction_info.kind == "huggingface"
    assert bridge.induction_info.bos_token_id == 0
    # The tokenizer lives only in OUT/ (as after trainer.save_model()); the checkpoint uses it.
    assert not (directory / "tokenizer.json").exists()
    assert bridge.tokenizer("t5 t7 t31", add_special_tokens=False)["input_ids"] == [5, 7, 31]
    unpickling_before = list(unpickling)
    reference = GPT2LMHeadModel.from_pretrained(str(directory), use_safetensors=True).eval()
    tokens = torch.randint(0, TINY["vocab_size"], (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), reference(tokens).logits, atol=1e-4, rtol=1e-4)
    assert unpickling == unpickling_before == []
    # Without --checkpoint, OUT names its final model (saved at the top), which is step 6's weights.
    final = load_model(trainer_run)
    with torch.no_grad():
        torch.testing.assert_close(final(tokens), load_model(trainer_run, checkpoint=6)(tokens))
    with pytest.raises(ModelLoadError, match="no checkpoint at step 5"):
        load_model(trainer_run, checkpoint=5)


def test_cli_tracks_a_trainer_output(trainer_run, tmp_path, capsys, unpickling):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    json_out = tmp_path / "track.json"
    argv = ["track", str(out), "-q", "--prompts", "8", "--bootstrap", "0", "--icl-sequences", "8",
            "--held-out-sequences", "8", "--format", "json", "--out", str(json_out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(json_out.read_text())
    assert [c["step"] for c in report["checkpoints"]] == [2, 4, 6]
    assert report["checkpoints"][1]["tokens_seen"] == 4 * TINY["batch_size"] * TINY["n_ctx"]
    assert unpickling == []


# ---- a live run: the newest checkpoint still being written ---------------------------------------

def write_partially(ckpt: Path, source: Path, stage: str) -> None:
    """`ckpt` as a Trainer leaves it at `stage` of writing `source`'s files."""
    ckpt.mkdir()
    if stage == "empty":
        return
    shutil.copy(source / "trainer_state.json", ckpt / "trainer_state.json")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["global_step"] = int(ckpt.name.split("-")[1])
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    if stage == "state only":
        return
    shutil.copy(source / "config.json", ckpt / "config.json")
    if stage == "config only":
        return
    data = (source / "model.safetensors").read_bytes()
    cut = {"header cut": 6, "data cut": len(data) - 100}[stage]
    (ckpt / "model.safetensors").write_bytes(data[:cut])


@pytest.mark.parametrize("stage", ["empty", "state only", "config only", "header cut", "data cut"])
def test_the_newest_checkpoint_being_written_is_left_out_and_said(trainer_run, tmp_path, stage, monkeypatch, capsys,
                                                                   unpickling):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    cfg = quick_track_config()
    whole = track(out, cfg)
    write_partially(out / "checkpoint-8", out / "checkpoint-6", stage)
    counter = CallCounter(monkeypatch, track_job)
    live = track(out, cfg)
    assert [c.step for c in live.checkpoints] == [2, 4, 6] and counter.calls == 0  # cached, nothing new
    assert live.to_json()["checkpoints"] == whole.to_json()["checkpoints"]
    pending = live.provenance["settings"]["pending_checkpoint"]
    assert pending["name"] == "checkpoint-8" and pending["reason"]
    assert any(line.startswith("left out: checkpoint-8, still being written") for line in live.summary())
    # The CLI says it in the report, exits 0, and JSON stays valid.
    assert main(["track", str(out), "-q", "--prompts", "8", "--bootstrap", "0", "--icl-sequences", "8",
                 "--held-out-sequences", "8", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["settings"]["pending_checkpoint"] == pending
    # Once the Trainer has finished writing it, a rerun scores it (and only it).
    shutil.rmtree(out / "checkpoint-8")
    shutil.copytree(out / "checkpoint-6", out / "checkpoint-8")
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    (out / "checkpoint-8" / "trainer_state.json").write_text(json.dumps({**state, "global_step": 8}))
    done = track(out, cfg)
    assert [c.step for c in done.checkpoints] == [2, 4, 6, 8] and counter.calls == 1
    assert done.provenance["settings"]["pending_checkpoint"] is None
    assert unpickling == []


def test_an_earlier_incomplete_checkpoint_is_damage_named_in_one_line(trainer_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    data = (out / "checkpoint-4" / "model.safetensors").read_bytes()
    (out / "checkpoint-4" / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["track", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint-4" in err and "Traceback" not in err


def test_a_run_whose_only_checkpoint_is_being_written_says_so(trainer_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    write_partially(out / "checkpoint-2", trainer_run / "checkpoint-2", "data cut")
    assert main(["track", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no complete checkpoint yet (checkpoint-2:" in err


def test_safetensors_size_problem_reads_the_header_only(trainer_run, tmp_path):
    source = trainer_run / "checkpoint-2" / "model.safetensors"
    data = source.read_bytes()
    assert safetensors_size_problem(source) is None
    for cut in (0, 5, 8, 20, len(data) // 2, len(data) - 1):
        part = tmp_path / f"cut{cut}.safetensors"
        part.write_bytes(data[:cut])
        assert safetensors_size_problem(part) is not None, cut


# ---- refusals -----------------------------------------------------------------------------------

def test_pickled_only_weights_are_refused_in_one_line(trainer_run, tmp_path, capsys, unpickling):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    ckpt = out / "checkpoint-4"
    (ckpt / "model.safetensors").unlink()
    plant_pickles(ckpt, tmp_path / "marker")
    shutil.copy(ckpt / "optimizer.pt", ckpt / "pytorch_model.bin")  # weights only as a pickle
    with pytest.raises(ModelLoadError) as info:
        load_model(ckpt)
    message = str(info.value)
    assert "\n" not in message and str(ckpt.resolve()) in message and "pytorch_model.bin" in message
    assert "not read by default" in message and "allow_pickle=True" in message
    assert main(["track", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint-4" in err and "pytorch_model.bin" in err
    assert unpickling == [] and not (tmp_path / "marker").exists()


def test_config_naming_a_pickled_weights_file_is_refused(trainer_run, tmp_path, unpickling):
    ckpt = tmp_path / "ck"
    shutil.copytree(trainer_run / "checkpoint-2", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(ModelLoadError, match="adapter_model.bin.*not safetensors"):
        load_hf_directory(ckpt)
    # A safetensors file it names is what transformers loads, and what the identity hashes.
    (ckpt / "model.safetensors").rename(ckpt / "weights.safetensors")
    (ckpt / "config.json").write_text(json.dumps({**config, "transformers_weights": "weights.safetensors"}))
    tokens = torch.randint(0, TINY["vocab_size"], (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(load_hf_directory(ckpt)(tokens), load_model(trainer_run / "checkpoint-2")(tokens))
    named = weights_sha256(ckpt)
    shutil.copy(trainer_run / "checkpoint-4" / "model.safetensors", ckpt / "model.safetensors")  # not loaded
    assert weights_sha256(ckpt) == named
    shutil.copy(trainer_run / "checkpoint-4" / "model.safetensors", ckpt / "weights.safetensors")  # loaded
    assert weights_sha256(ckpt) != named
    assert unpickling == []


def test_steps_come_from_folder_names_checked_against_trainer_state(trainer_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out)
    assert [(c.step, c.name) for c in folder_checkpoints(out)] == [(2, "checkpoint-2"), (4, "checkpoint-4"),
                                                                   (6, "checkpoint-6")]
    (out / "checkpoint-4").rename(out / "checkpoint-40")  # a renamed folder contradicts its state
    with pytest.raises(ModelLoadError, match="folder name says step 40 but trainer_state.json says global_step 4"):
        folder_checkpoints(out)


def test_trainer_progress_reads_the_log():
    state = {"global_step": 30, "num_input_tokens_seen": 0, "log_history": [
        {"step": 10, "loss": 4.0, "learning_rate": 1e-3}, {"step": 20, "loss": 3.0},
        {"step": 20, "eval_loss": 9.0}, {"step": 40, "loss": 1.0}]}
    # The last training loss logged at or before the step; tokens unknown (the Trainer left them 0).
    assert trainer_progress(state, 30) == (None, 3.0)
    assert trainer_progress(state, 5) == (None, None)
    counted = {"global_step": 20, "num_input_tokens_seen": 5120, "log_history": [{"step": 20, "loss": 2.5}]}
    assert trainer_progress(counted, 20) == (5120, 2.5)
    logged = {"global_step": 20, "log_history": [{"step": 10, "num_input_tokens_seen": 100, "loss": 2.0}]}
    assert trainer_progress(logged, 20) == (100, 2.0)
    assert trainer_progress(None, 20) == (None, None)
    # Python's JSON reader gives NaN and Infinity too: not recorded numbers (int(inf) raised, NaN reached the report).
    odd = {"num_input_tokens_seen": float("inf"), "log_history": [{"step": 10, "loss": 2.0},
                                                                    {"step": 20, "loss": float("nan")}]}
    assert trainer_progress(odd, 20) == (None, 2.0)


def test_trainer_state_of_the_wrong_shape_is_one_line(trainer_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trainer_run, out, ignore=shutil.ignore_patterns("track"))
    state_file = out / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "log_history": 5}))
    assert main(["track", str(out), "-q", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "log_history must be a list, got 5" in err, err


# ---- a folder of revision directories ----------------------------------------------------------

def test_folder_of_revision_dirs_is_tracked_in_step_order(tmp_path, capsys, unpickling):
    folder = tmp_path / "pythia-like"
    names = {"step1000": 3, "step20": 1, "rev-300": 2}
    for name, seed in names.items():
        save_tiny_hf_gpt2(folder / name, seed=seed, with_tokenizer=False)
        plant_pickles(folder / name, tmp_path / "marker")
    (folder / "notes").mkdir()  # a folder that is not a model is not a revision
    cfg = quick_track_config()
    report = track(folder, cfg)
    assert [c.step for c in report.checkpoints] == [20, 300, 1000]
    assert all(c.tokens_seen is None and c.loss is None for c in report.checkpoints)
    for c, name in zip(report.checkpoints, ("step20", "rev-300", "step1000")):
        model = load_model(folder / name)
        assert c.heads == score_heads(model, cfg.scan.detector).to_records()
    # No tokenizer files anywhere: BOS from config.json (0 here), not the bridge's empty tokenizer.
    assert load_model(folder / "step20").induction_info.bos_token_id == 0
    # --revisions picks folders, in the given order; the cache under FOLDER/track/ answers them.
    json_out = tmp_path / "track.json"
    argv = ["track", str(folder), "--revisions", "step1000,step20", "-q", "--prompts", "8", "--bootstrap", "0",
            "--icl-sequences", "8", "--held-out-sequences", "8", "--format", "json", "--out", str(json_out)]
    assert main(argv) == 0, capsys.readouterr().err
    picked = json.loads(json_out.read_text())["checkpoints"]
    assert [c["step"] for c in picked] == [1000, 20]
    assert picked[1]["heads"] == report.to_json()["checkpoints"][0]["heads"]
    assert main(["track", str(folder), "--revisions", "step7", "-q"]) == 2
    assert "no folder 'step7'" in capsys.readouterr().err
    assert unpickling == [] and not (tmp_path / "marker").exists()


def test_a_revision_folder_without_a_step_number_is_an_error(tmp_path, capsys):
    save_tiny_hf_gpt2(tmp_path / "f" / "step10", with_tokenizer=False)
    save_tiny_hf_gpt2(tmp_path / "f" / "main", with_tokenizer=False)
    capsys.readouterr()
    assert main(["track", str(tmp_path / "f"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "main" in err and "no step number" in err


def test_a_directory_that_is_no_run_gives_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["track", str(tmp_path / "empty"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint-N" in err and "--revisions" in err


# ---- loading Hugging Face directories -----------------------------------------------------------

def test_sharded_safetensors_load_and_hash(tmp_path, unpickling):
    hf = save_tiny_hf_gpt2(tmp_path / "one")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    bridge = load_model(tmp_path / "sharded")
    tokens = torch.randint(0, 60, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    assert unpickling == []
    before = weights_sha256(tmp_path / "sharded")
    shard = tmp_path / "sharded" / shards[-1]
    state = load_file(str(shard))
    save_file({k: v + 1 for k, v in state.items()}, str(shard), metadata={"format": "pt"})
    assert weights_sha256(tmp_path / "sharded") != before
    # Being written: a shard cut short, then one not there yet; whole again, nothing is pending.
    assert pending_reason(tmp_path / "sharded") is None
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert shards[-1] in pending_reason(tmp_path / "sharded")
    shard.unlink()
    assert pending_reason(tmp_path / "sharded") == f"{shards[-1]} not written yet"
    shard.write_bytes(data)
    assert pending_reason(tmp_path / "sharded") is None


def test_a_local_model_directory_has_no_revisions(tmp_path):
    """transformers ignores a revision for a local directory; every revision would be the same model."""
    save_tiny_hf_gpt2(tmp_path / "gpt2")
    with pytest.raises(ModelLoadError, match="local model directory, which has no revisions"):
        load_model(tmp_path / "gpt2", revision="step1000")


# ---- the real transformers.Trainer --------------------------------------------------------------

def test_a_real_trainer_output_is_tracked(tmp_path):
    """The layout parsed here is the one transformers.Trainer writes (a 4-step run)."""
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    hf = save_tiny_hf_gpt2(tmp_path / "init")
    data = [{"input_ids": x, "labels": x} for x in torch.randint(1, 60, (16, 24))]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=hf.train(), args=args, train_dataset=data)
    trainer.train()
    out = tmp_path / "out"
    assert set(PICKLES) <= {p.name for p in (out / "checkpoint-4").iterdir()}
    for step in (2, 4):
        plant_pickles(out / f"checkpoint-{step}", tmp_path / "marker")
    with pytest.MonkeyPatch.context() as guard:  # the Trainer itself unpickles; tracking must not
        attempts = refuse_unpickling(guard)
        report = track(out, quick_track_config())
    assert attempts == [] and not (tmp_path / "marker").exists()
    assert [c.step for c in report.checkpoints] == [2, 4]
    logged = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    assert [c.loss for c in report.checkpoints] == pytest.approx([logged[2], logged[4]])


# ---- the real thing (slow) ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_gpt2_trained_here_is_tracked_through_its_phase_change(tmp_path):
    """scripts/train_hf_gpt2.py's default recipe, Trainer-style folders with planted pickles:
    `induction track OUT` finds the phase change, reading nothing but JSON and safetensors."""
    out = hf_train.train(hf_train.HFGPT2Config(), tmp_path / "out", progress=False)
    checkpoints = sorted(out.glob("checkpoint-*"))
    for ckpt in checkpoints:
        plant_pickles(ckpt, tmp_path / "marker")
    report_file = tmp_path / "track.json"
    with pytest.MonkeyPatch.context() as guard:
        attempts = refuse_unpickling(guard)
        assert main(["track", str(out), "-q", "--format", "json", "--out", str(report_file)]) == 0
    assert attempts == [] and not (tmp_path / "marker").exists()
    report = json.loads(report_file.read_text())
    steps = [c["step"] for c in report["checkpoints"]]
    assert steps == sorted(int(p.name.split("-")[1]) for p in checkpoints)
    pc = report["phase_change"]
    assert pc is not None, [(c["step"], max(h["prefix_matching"] for h in c["heads"])) for c in report["checkpoints"]]
    best = {c["step"]: max(h["prefix_matching"] for h in c["heads"]) for c in report["checkpoints"]}
    before = [c for c in report["checkpoints"] if c["step"] <= pc["start_step"]]
    after = [c for c in report["checkpoints"] if c["step"] >= pc["end_step"]]
    assert len(before) >= 5 and len(after) >= 2  # the plateau and the aftermath are both resolved
    # Best prefix-matching rises past the threshold (0.4) and the ICL score and losses fall, together.
    assert max(best[c["step"]] for c in before) < 0.4 < min(best[c["step"]] for c in after)
    assert max(c["icl_score"] for c in after) < min(c["icl_score"] for c in before) - 1.0
    assert max(c["held_out_loss"] for c in after) < min(c["held_out_loss"] for c in before) - 1.0
    logged = [c["loss"] for c in before if c["loss"] is not None]  # none before the first log (step 10)
    assert len(logged) >= 3 and max(c["loss"] for c in after) < min(logged) - 1.0  # the Trainer-logged loss
    assert any(h["is_induction"] for h in report["checkpoints"][-1]["heads"])
    assert not any(h["is_induction"] for c in before for h in c["heads"])
