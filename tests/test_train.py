"""Training runs: reproducible bit for bit, resumable to the same bits, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from induction.inputs.repeated import ToyDataConfig
from induction.loading.models import load_model
from induction.loading.runs import MANIFEST_FILE, RESUME_DIR, RunExistsError, read_manifest, run_checkpoints
from induction.training.config import TrainConfig
from induction.training.train import train


def tiny_config(**overrides) -> TrainConfig:
    """A run that takes about a second: 2 layers of 4 heads, d_model 32, context 32, 24 steps."""
    base = dict(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=24, n_log_checkpoints=5, checkpoint_every=10)
    base.update(overrides)
    return TrainConfig.from_flat(**base)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(dict(run_checkpoints(run))[step] / "model.safetensors"))


def assert_same_run(a: Path, b: Path) -> None:
    """Same checkpoints (steps, tokens, losses) with bit-identical weights and meta."""
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["checkpoints"] == mb["checkpoints"]
    for step, ckpt in run_checkpoints(a):
        wa, wb = weights(a, step), weights(b, step)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"step {step}: {key} differs"
        assert (ckpt / "meta.json").read_text() == (b / ckpt.relative_to(a) / "meta.json").read_text()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted tiny run the other tests compare with."""
    return train(tiny_config(), tmp_path_factory.mktemp("ref") / "run", progress=False)


# ---- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"d_model": 30}, "must be divisible by n_heads"),
        ({"lr": -1.0}, "lr must be a positive number or None"),
        ({"warmup_steps": -5}, "warmup_steps must be >= 0 or None"),
        ({"betas": (0.9, 1.5)}, r"betas must be two numbers in \[0, 1\)"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0 or None"),
        ({"checkpoint_every": -1}, r"checkpoint_every must be >= 0 \(0: off\)"),
        ({"data": ToyDataConfig(d_vocab=16, seq_len=32)}, r"data.d_vocab \(16\) must equal d_vocab \(32\)"),
        ({"data": ToyDataConfig(d_vocab=32, seq_len=64)}, r"exceeds the context n_ctx \(32\)"),
    ],
)
def test_config_validation_names_the_allowed_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_defaults_and_round_trip():
    cfg = TrainConfig()
    m = cfg.model
    assert (m.n_layers, m.d_model, m.n_heads, m.n_ctx, m.d_vocab, m.attn_only) == (2, 64, 4, 128, 128, True)
    assert (cfg.batch_size, cfg.schedule.steps, cfg.resolved_lr, cfg.resolved_warmup_steps) == (16, 1000, 1e-2, 0)
    assert cfg.data == ToyDataConfig(d_vocab=128, seq_len=128)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    gpt2 = TrainConfig.from_flat(attn_only=False)
    assert gpt2.model_config()["normalization_type"] == "LN" and gpt2.model_config()["d_mlp"] == 256
    assert (gpt2.resolved_lr, gpt2.resolved_warmup_steps, gpt2.batch_size) == (3e-3, 400, 32)
    assert gpt2.data.min_segment == 16 and cfg.data.min_segment == 4  # the recipe that forms canonical heads
    assert TrainConfig.from_flat(attn_only=False, n_ctx=16, d_vocab=16).data.min_segment == 7  # within the cap
    assert gpt2.lr_at(0) == pytest.approx(3e-3 / 400) and gpt2.lr_at(399) == gpt2.lr_at(5000) == 3e-3
    # A small vocabulary caps the segment length (segments hold distinct tokens).
    assert TrainConfig.from_flat(d_vocab=16).data.resolved_max_segment == 15
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"layers": 2})
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**cfg.to_dict(), "extra": 1})
    # Format 1 (flat) train_configs, as older runs recorded them, read as the same config.
    flat = {"n_layers": 1, "lr": 0.02, "steps": 30, "seed": 3, "betas": [0.9, 0.95]}
    old = TrainConfig.from_dict(flat)
    assert (old.model.n_layers, old.optim.lr, old.optim.betas, old.schedule.steps, old.seed) == (1, 0.02, (0.9, 0.95), 30, 3)


def test_checkpoint_schedule_is_log_spaced_plus_every_n_plus_final():
    cfg = TrainConfig.from_flat(steps=1000, n_log_checkpoints=4, checkpoint_every=300)
    assert cfg.checkpoint_steps() == [0, 1, 10, 100, 300, 600, 900, 1000]
    assert TrainConfig.from_flat(steps=7, n_log_checkpoints=0, checkpoint_every=0).checkpoint_steps() == [0, 7]
    default = TrainConfig().checkpoint_steps()
    assert default[0] == 0 and default[-1] == 1000 and default == sorted(set(default))
    assert sum(s < 100 for s in default) >= 10  # the early plateau is resolved on a log axis


# ---- reproducibility and resume -----------------------------------------------------------------

def test_same_seed_gives_bit_identical_checkpoints(reference_run, tmp_path):
    again = train(tiny_config(), tmp_path / "again", progress=False)
    assert_same_run(reference_run, again)
    other = train(tiny_config(seed=1), tmp_path / "other", progress=False)
    assert not torch.equal(weights(reference_run, 24)["embed.weight"], weights(other, 24)["embed.weight"])


@pytest.mark.parametrize("stop_after", [7, 10])  # between checkpoints, and exactly on one
def test_killed_and_resumed_run_equals_uninterrupted_run(reference_run, tmp_path, stop_after):
    run = tmp_path / "run"
    train(tiny_config(), run, progress=False, stop_after=stop_after)
    manifest = read_manifest(run)
    assert not manifest["complete"] and manifest["checkpoints"][-1]["step"] <= stop_after
    saved = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    train(tiny_config(), run, resume=True, progress=False)
    assert_same_run(reference_run, run)
    assert read_manifest(run)["complete"]
    for path, data in saved.items():  # nothing already saved is lost or changed
        assert path.read_bytes() == data, path
    assert [p.name for p in (run / RESUME_DIR).iterdir()] == ["step_000024"]


def test_resume_in_slices_and_resume_of_finished_run(reference_run, tmp_path):
    run = tmp_path / "run"
    for stop in (3, 3, 12, 19):  # a repeated stop resumes and stops at once
        train(tiny_config(), run, resume=True, progress=False, stop_after=stop)
    train(tiny_config(), run, resume=True, progress=False)
    assert_same_run(reference_run, run)
    before = (run / MANIFEST_FILE).read_text()
    train(tiny_config(), run, resume=True, progress=False)  # finished: nothing to do
    assert (run / MANIFEST_FILE).read_text() == before


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(reference_run, tmp_path):
    with pytest.raises(RunExistsError, match="already holds a run"):
        train(tiny_config(), reference_run, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not empty"):
        train(tiny_config(), tmp_path / "junk", progress=False)
    with pytest.raises(ValueError, match="differs in optim.lr, seed"):
        train(tiny_config(seed=3, lr=0.5), reference_run, resume=True, progress=False)


# ---- atomic writes ------------------------------------------------------------------------------

@pytest.mark.parametrize("target, fail_on_call", [("induction.loading.native.save_file", 4), ("induction.loading.runs.save_file", 3)])
def test_failure_mid_save_leaves_only_whole_checkpoints_and_resumes(reference_run, tmp_path, monkeypatch, target, fail_on_call):
    """An exception while writing checkpoint weights (models) or resume state (train) mid-run."""
    import importlib

    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, attr)
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            real(*args, **kwargs)  # half-written file, then the crash
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, flaky)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        train(tiny_config(), run, progress=False)
    listed = {c["path"] for c in read_manifest(run)["checkpoints"]}
    assert len(listed) == fail_on_call - 1
    on_disk = sorted((run / "checkpoints").iterdir())
    assert all(not p.name.startswith(".") for p in on_disk), "temporary directory left behind"
    for path in on_disk:
        assert {f.name for f in path.iterdir()} == {"config.json", "model.safetensors", "meta.json"}
    for entry in read_manifest(run)["checkpoints"]:
        load_model(run, checkpoint=entry["step"])  # every listed checkpoint loads
    monkeypatch.setattr(module, attr, real)
    train(tiny_config(), run, resume=True, progress=False)
    assert_same_run(reference_run, run)


# ---- the run directory --------------------------------------------------------------------------

def test_manifest_round_trips_through_load_model(reference_run):
    cfg = tiny_config()
    manifest = read_manifest(reference_run)
    assert manifest["format_version"] == 2 and manifest["complete"]
    assert TrainConfig.from_dict(manifest["train_config"]) == cfg
    assert manifest["data"] == cfg.data.to_dict()
    assert [c["step"] for c in manifest["checkpoints"]] == cfg.checkpoint_steps() == [0, 1, 2, 5, 10, 11, 20, 24]
    for entry in manifest["checkpoints"]:
        model = load_model(reference_run, checkpoint=entry["step"])
        info = model.induction_info
        assert info.checkpoint == entry["step"] and info.bos_token_id == 0 and info.data == cfg.data.to_dict()
        assert info.meta["tokens_seen"] == entry["tokens_seen"] == entry["step"] * 4 * 32
        assert info.meta["loss"] == entry["loss"] and info.meta["seed"] == 0
        assert entry["path"] == f"checkpoints/step_{entry['step']:06d}"
        assert not model.training
    losses = [c["loss"] for c in manifest["checkpoints"]]
    assert losses[0] == pytest.approx(torch.log(torch.tensor(31.0)).item(), abs=0.3)  # ~uniform at init
    assert load_model(reference_run).induction_info.checkpoint == 24


def test_progress_bar_goes_to_stderr_and_can_be_turned_off(tmp_path, capsys):
    train(tiny_config(steps=3), tmp_path / "quiet", progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    train(tiny_config(steps=3), tmp_path / "loud", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "training" in err and "loss=" in err


def test_gpt2_style_model_trains_and_reloads(tmp_path):
    cfg = tiny_config(attn_only=False, steps=4, n_log_checkpoints=0, checkpoint_every=0)
    run = train(cfg, tmp_path / "gpt2", progress=False)
    model = load_model(run)
    assert model.cfg.normalization_type == "LN" and not model.cfg.attn_only and model.cfg.d_mlp == 128
    assert hasattr(model.blocks[0], "mlp")
    assert read_manifest(run)["checkpoints"][-1]["step"] == 4


def test_training_leaves_thread_count_and_global_rng_alone(tmp_path):
    torch.set_num_threads(2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_config(steps=2), tmp_path / "run", progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == 2


# ---- the real thing (slow) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_runs(tmp_path_factory) -> dict[int, Path]:
    from induction.training.defaults import default_seed

    root = tmp_path_factory.mktemp("default")
    return {n: train(TrainConfig.from_flat(n_layers=n, seed=default_seed()), root / f"{n}l", progress=False)
            for n in (2, 1)}


@pytest.mark.slow
def test_default_two_layer_run_forms_induction_heads_and_one_layer_run_does_not(default_runs):
    """The default runs' final checkpoints, scored with the default detector and ICL score."""
    from induction.heads.scores import score_heads
    from induction.measures.icl import icl_score

    two, one = load_model(default_runs[2]), load_model(default_runs[1])
    s2, s1 = score_heads(two), score_heads(one)
    assert s2.prefix_matching[1].max() > 0.8 and s2.copying_ov[1].max() > 0.9
    assert s2.induction_heads() and all(layer == 1 for layer, _ in s2.induction_heads())
    assert s1.prefix_matching.max() < 0.2 and s1.induction_heads() == []
    icl2, icl1 = icl_score(two).score, icl_score(one).score
    assert icl2 < -3.0 and icl2 < icl1 - 1.5
    assert read_manifest(default_runs[2])["checkpoints"][-1]["loss"] < 2.0 < read_manifest(default_runs[1])["checkpoints"][-1]["loss"]


# ---- the CLI ------------------------------------------------------------------------------------

def test_cli_train_writes_a_run_and_resumes_it(tmp_path, capsys):
    from induction.cli import main

    run = tmp_path / "run"
    argv = ["train", "--layers", "1", "--d-model", "32", "--ctx", "32", "--vocab", "32", "--batch-size", "4",
            "--log-checkpoints", "3", "--checkpoint-every", "0", "-q", "--out", str(run)]
    assert main(argv + ["--steps", "4", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"] == str(run) and report["complete"] and report["train_config"]["model"]["n_layers"] == 1
    assert [c["step"] for c in report["checkpoints"]] == [0, 1, 2, 4] and "versions" in report["provenance"]
    assert load_model(run).cfg.n_layers == 1

    assert main(argv + ["--steps", "4"]) == 2  # no silent overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", "--layers", "2", "--out", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different n_layers" in err
    assert main(["train", "--resume", "--out", str(run), "-q", "--format", "csv"]) == 0  # the run's own settings
    assert capsys.readouterr().out.splitlines()[0] == "step,tokens_seen,loss,path"
    assert main(["train", "--steps", "3", "-q"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


def test_default_run_trains_once_when_two_processes_ask(tmp_path, monkeypatch):
    """Concurrent default_run calls for one model: one trains, the other waits and reuses it."""
    import multiprocessing as mp

    monkeypatch.setenv("INDUCTION_CACHE", str(tmp_path))
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        runs = pool.map(_tiny_default_run, [0, 1])
    assert runs[0] == runs[1]
    from induction.loading.runs import run_checkpoints

    assert [s for s, _ in run_checkpoints(runs[0])][-1] == 3  # one complete run, no crash from a shared directory


def _tiny_default_run(_: int) -> str:
    import induction.training.defaults as d
    from induction.training.config import TrainConfig

    d.DEFAULTS["tiny"] = lambda: TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=3,
                                             n_log_checkpoints=2, checkpoint_every=0)
    return str(d.default_run("tiny", progress=False))


def test_resume_recovers_a_checkpoint_caught_mid_swap(tmp_path):
    """A kill between save_checkpoint's two renames leaves the only copy in `.<name>.old.*/ck`:
    resume must restore it, not delete it."""
    import os

    from induction.training.config import TrainConfig
    from induction.training.train import train

    cfg = TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=4, n_log_checkpoints=2,
                      checkpoint_every=2)
    run = train(cfg, tmp_path / "run", progress=False, stop_after=2)
    ck = run / "checkpoints" / "step_000002"
    before = (ck / "model.safetensors").read_bytes()
    limbo = run / "checkpoints" / ".step_000002.old.abc"
    limbo.mkdir()
    os.replace(ck, limbo / "ck")
    train(cfg, run, resume=True, progress=False)
    assert (ck / "model.safetensors").read_bytes() == before
    assert not limbo.exists()


@pytest.mark.slow
def test_default_gpt2_style_recipe_forms_canonical_induction_heads(tmp_path):
    """`induction train --mlp` (LayerNorm + MLP) with its defaults: lr 3e-3, 400 warm-up steps, batch
    32, segments of at least 16 tokens. With the old shortest segment (4) the same model learned a
    shifted circuit that canonical prefix-matching scores near 0 (see README, Training recipes)."""
    from induction.cli import main
    from induction.heads.config import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig
    from induction.jobs import ScanConfig, scan

    run = tmp_path / "mlp"
    assert main(["train", "--mlp", "--steps", "1000", "--out", str(run), "-q", "--device", "cpu"]) == 0
    report = scan(run, ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=32), n_bootstrap=0)))
    heads = report.scores.induction_heads()
    assert len(heads) >= 2 and all(layer == 1 for layer, _ in heads), report.summary()
    assert report.icl.score < -3.0
