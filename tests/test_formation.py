"""Formation tracking: one number source per checkpoint, a cache that recomputes nothing twice, and a
phase-change detector that finds known change points and nothing in flat curves."""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CallCounter, save_tiny_hf_gpt2

import induction.loading.models
import induction.loading.sources
from induction.inputs.repeated import sample_batch
from induction.jobs import ScanConfig, TrackConfig, track
from induction.jobs.track import HELD_OUT_SEED_OFFSET
from induction.loading.sources import revision_steps
from induction.measures.formation import PhaseChange, detect_phase_change
from induction.measures.icl import ICLConfig, icl_score
from induction.reports.track import TrackReport

track_job = importlib.import_module("induction.jobs.track.tasks")  # what runs per checkpoint
from induction.heads.config import ScoreConfig
from induction.heads.scores import score_heads
from induction.inputs.prompts import RepeatedTokensConfig
from induction.loading.hf_dirs import weights_sha256
from induction.loading.models import load_model
from induction.loading.runs import read_manifest
from induction.training.config import TrainConfig
from induction.training.train import train

HEAD_KEYS = {"layer", "head", "prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token", "is_induction",
             "induction_offset", "offset_prefix_matching", "offset_copying", "is_shifted_induction"}


def quick_track_config(icl_sequences: int = 8, **overrides) -> TrackConfig:
    scan = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0),
                      icl=ICLConfig(n_sequences=icl_sequences, n_bootstrap=0))
    return TrackConfig(**{"scan": scan, "held_out_sequences": 8, **overrides})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=12, n_log_checkpoints=3, checkpoint_every=10)
    return train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)




# ---- the report ---------------------------------------------------------------------------------

def test_track_report_follows_the_contract_and_agrees_with_scan(tiny_run, tmp_path):
    cfg = quick_track_config(cache=False)
    report = track(tiny_run, cfg)
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"run", "checkpoints", "phase_change", "transience", "audit", "provenance"}  # CONTRACT: the audit block
    assert data["audit"]["suspect"] == [] and data["audit"]["excluded_from_fit"] is True
    manifest = read_manifest(tiny_run)
    assert [c["step"] for c in data["checkpoints"]] == [c["step"] for c in manifest["checkpoints"]] == [0, 1, 3, 10, 12]
    for entry, ckpt in zip(manifest["checkpoints"], data["checkpoints"]):
        assert {"step", "tokens_seen", "loss", "held_out_loss", "icl_score", "heads"} <= set(ckpt)
        assert (ckpt["tokens_seen"], ckpt["loss"]) == (entry["tokens_seen"], entry["loss"])
        assert len(ckpt["heads"]) == 8 and all(HEAD_KEYS <= set(h) for h in ckpt["heads"])
    assert data["phase_change"] is None  # 12 steps: nothing forms
    assert (tiny_run / "track").exists() is False  # cache=False writes nothing

    # Every number has one source: the same functions on the loaded checkpoint give the same values.
    model = load_model(tiny_run, checkpoint=10)
    last = report.checkpoints[3]
    assert last.heads == score_heads(model, cfg.scan.detector).to_records()
    assert last.icl_score == icl_score(model, n_sequences=8, seed=0, n_bootstrap=0).score
    seed = manifest["train_config"]["seed"] + HELD_OUT_SEED_OFFSET
    held_out = sample_batch(TrainConfig.from_dict(manifest["train_config"]).data, 8, torch.Generator().manual_seed(seed))
    expected = torch.nn.functional.cross_entropy(model(held_out)[:, :-1].flatten(0, 1), held_out[:, 1:].flatten())
    assert last.held_out_loss == pytest.approx(expected.item(), rel=1e-5)

    frame = report.to_dataframe()
    assert list(frame["step"]) == [0, 1, 3, 10, 12] and frame.shape[1] == len(report.columns) == 9
    per_head = report.to_dataframe(per_head=True)
    assert len(per_head) == 5 * 8 and HEAD_KEYS <= set(per_head.columns)


def test_held_out_loss_is_measured_off_the_training_stream(tiny_run):
    """track's held-out batch is drawn with the training seed + the offset, never the training stream."""
    manifest = read_manifest(tiny_run)
    seed = manifest["train_config"]["seed"]
    report = track(tiny_run, quick_track_config(cache=False))
    assert report.provenance["settings"]["held_out_seed"] == seed + HELD_OUT_SEED_OFFSET
    model = load_model(tiny_run, checkpoint=12)
    data = TrainConfig.from_dict(manifest["train_config"]).data

    def loss(generator_seed: int) -> float:
        batch = sample_batch(data, 8, torch.Generator().manual_seed(generator_seed))
        with torch.no_grad():
            logits = model(batch)
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten()).item()

    held_out = report.checkpoints[-1].held_out_loss
    assert held_out == pytest.approx(loss(seed + HELD_OUT_SEED_OFFSET), rel=1e-5)
    assert held_out != pytest.approx(loss(seed), rel=1e-5)  # not the batch the training stream starts with
    other = track(tiny_run, quick_track_config(cache=False, held_out_seed=7))
    assert other.checkpoints[-1].held_out_loss == pytest.approx(loss(7), rel=1e-5)


# ---- caching ------------------------------------------------------------------------------------

def test_second_track_recomputes_nothing(tiny_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    counter = CallCounter(monkeypatch, track_job)
    first = track(run, quick_track_config())
    assert counter.calls == 5
    second = track(run, quick_track_config())
    assert counter.calls == 5  # all five came from <run>/track/
    assert second.to_json()["checkpoints"] == first.to_json()["checkpoints"]
    # Changed settings get their own cache and are computed afresh; the old results stay.
    track(run, quick_track_config(icl_sequences=4))
    assert counter.calls == 10
    assert len([p for p in (run / "track").iterdir() if p.is_dir()]) == 2
    # The phase-change settings are not part of the key: no recomputation.
    track(run, quick_track_config(phase_threshold=0.9))
    assert counter.calls == 10
    # A changed scoring definition (the source of the scoring modules) is recomputed too.
    monkeypatch.setattr(importlib.import_module("induction.jobs.track.config"), "scoring_code_hash", lambda: "a-new-copying-score")
    track(run, quick_track_config())
    assert counter.calls == 15


def test_interrupted_track_resumes_and_changed_weights_are_rescored(tiny_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    counter = CallCounter(monkeypatch, track_job, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        track(run, quick_track_config())
    assert counter.calls == 3
    track(run, quick_track_config())
    assert counter.calls == 3 + 3  # the two finished checkpoints were not recomputed
    # Rewriting a checkpoint's weights invalidates its cached scores only.
    ckpt = run / "checkpoints" / "step_000003"
    shutil.copy(run / "checkpoints" / "step_000010" / "model.safetensors", ckpt / "model.safetensors")
    report = track(run, quick_track_config())
    assert counter.calls == 7
    by_step = {c.step: c for c in report.checkpoints}
    assert by_step[3].heads == by_step[10].heads
    # A corrupt cache file is recomputed, not trusted.
    cache = next(p for p in (run / "track").iterdir() if p.is_dir())
    (cache / "step_000012.json").write_text("{not json")
    track(run, quick_track_config())
    assert counter.calls == 8


# ---- phase-change detection ---------------------------------------------------------------------

SCHEDULE = np.array(TrainConfig().checkpoint_steps(), dtype=float)  # the default run's checkpoints


def sigmoid_curves(centre: float, width: float, noise: float = 0.0, seed: int = 0):
    """Best prefix-matching rising 0.03 -> 0.93 and ICL score falling -0.1 -> -3.1 around `centre`."""
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        z = (np.log(SCHEDULE) - math.log(centre)) / width
    progress = 1 / (1 + np.exp(-z))
    prefix = 0.03 + 0.9 * progress + rng.normal(0, noise, len(SCHEDULE))
    icl = -0.1 - 3.0 * progress + rng.normal(0, 10 * noise, len(SCHEDULE))
    return prefix, icl


@pytest.mark.parametrize("centre, width", [(300, 0.1), (100, 0.3), (600, 0.05), (30, 0.2)])
def test_phase_change_is_found_at_a_known_change_point(centre, width):
    prefix, icl = sigmoid_curves(centre, width)
    pc = detect_phase_change(SCHEDULE, prefix, icl)
    assert pc is not None
    assert pc.step == pytest.approx(centre, rel=0.02)
    assert pc.start_step == pytest.approx(centre * math.exp(-width * math.log(9)), rel=0.03)
    assert pc.end_step == pytest.approx(centre * math.exp(width * math.log(9)), rel=0.03)


def test_phase_change_detection_tolerates_noise_and_order():
    prefix, icl = sigmoid_curves(300, 0.1, noise=0.03)
    pc = detect_phase_change(SCHEDULE, prefix, icl)
    assert pc.step == pytest.approx(300, rel=0.05) and 220 < pc.start_step < pc.step < pc.end_step < 400
    order = np.random.default_rng(1).permutation(len(SCHEDULE))
    assert detect_phase_change(SCHEDULE[order], prefix[order], icl[order]) == pc


def test_abrupt_jump_is_placed_between_the_two_checkpoints():
    prefix = np.where(SCHEDULE >= 500, 0.9, 0.03)
    pc = detect_phase_change(SCHEDULE, prefix, None)
    assert 450 < pc.start_step <= pc.step <= pc.end_step < 500  # 450 and 500 are adjacent checkpoints


@pytest.mark.parametrize(
    "prefix, icl",
    [
        (np.full(len(SCHEDULE), 0.03), np.full(len(SCHEDULE), -0.1)),  # flat
        (0.03 + 0.01 * np.random.default_rng(0).standard_normal(len(SCHEDULE)), None),  # flat, noisy
        (sigmoid_curves(300, 0.1)[0] * 0.3, sigmoid_curves(300, 0.1)[1]),  # rises, but only to 0.28
        (0.9 - sigmoid_curves(300, 0.1)[0], None),  # falls: not a formation
    ],
)
def test_no_phase_change_in_flat_or_weak_curves(prefix, icl):
    assert detect_phase_change(SCHEDULE, prefix, icl) is None


def test_phase_change_needs_three_checkpoints_and_matching_lengths():
    assert detect_phase_change([0, 10, 20], [0.0, 0.1, 0.9], [0.0, -1.0, -3.0]) is None  # step 0 is left out
    pc = detect_phase_change([10, 20, 40], [0.0, 0.1, 0.9], None)
    assert 20 <= pc.start_step <= pc.step <= pc.end_step <= 40
    with pytest.raises(ValueError, match="same length"):
        detect_phase_change([1, 2, 3], [0.1, 0.2], None)


# ---- published checkpoints (Hugging Face revisions), offline ------------------------------------

def test_revision_steps():
    assert revision_steps(["step0", "step1000", "checkpoint-400", "main"]) == [0, 1000, 400, 3]


def test_track_revisions_loads_each_revision_in_turn(tmp_path, monkeypatch):
    dirs = {"step0": tmp_path / "a", "step100": tmp_path / "b", "step1000": tmp_path / "c"}
    for seed, path in enumerate(dirs.values()):
        save_tiny_hf_gpt2(path, seed=seed)
    calls = []

    def fake_load_model(spec, checkpoint=None, revision=None, device=None, dtype=None, **loading):
        calls.append((spec, revision))
        return load_model(dirs[revision])  # a local directory stands in for the hub revision

    def fake_identity(spec, revision, hub, recorded=None):  # what the hub's listing gives (tests/test_hub.py)
        return {"repo": spec, "commit": revision, "weights_sha256": weights_sha256(dirs[revision])}

    monkeypatch.setattr(induction.loading.models, "load_model", fake_load_model)
    monkeypatch.setattr(induction.loading.sources, "revision_identity", fake_identity)
    revisions = ["step1000", "step0", "step100"]
    cfg = quick_track_config(revisions=revisions, cache_dir=tmp_path / "cache")
    report = track("org/model", cfg)
    # Each revision once, and the first (step0) once more: the audit's reference, needed first by step1000.
    assert calls == [("org/model", "step1000"), ("org/model", "step0"), ("org/model", "step0"), ("org/model", "step100")]
    assert [c.step for c in report.checkpoints] == [1000, 0, 100]
    assert [c.revision for c in report.checkpoints] == revisions
    data = json.loads(json.dumps(report.to_json()))
    assert data["run"] == "org/model" and data["checkpoints"][0]["revision"] == "step1000"
    assert all(c["tokens_seen"] is None and c["loss"] is None for c in data["checkpoints"])
    expected = score_heads(load_model(dirs["step100"]), cfg.scan.detector).to_records()
    assert report.checkpoints[2].heads == expected
    assert math.isfinite(report.checkpoints[2].held_out_loss) and math.isfinite(report.checkpoints[2].icl_score)
    # Cached by revision and weights hash: a repeat loads nothing.
    again = track("org/model", cfg)
    assert len(calls) == 4 and again.to_json()["checkpoints"] == report.to_json()["checkpoints"]
    with pytest.raises(ValueError, match="repeated"):
        track("org/model", replace(cfg, revisions=("step0", "step0")))


# ---- figure -------------------------------------------------------------------------------------

def test_revisions_of_a_run_directory_are_refused_not_ignored(tiny_run, monkeypatch):
    """A run has steps, not revisions: --revisions on one used to track every checkpoint regardless."""
    counter = CallCounter(monkeypatch, importlib.import_module("induction.jobs.track.run"), "score_task")
    with pytest.raises(ValueError, match="is a run directory, which has no revisions"):
        track(tiny_run, quick_track_config(revisions=("step1000",)))
    assert counter.calls == 0


def test_formation_figure_shows_the_curves_and_the_window(tiny_run, tmp_path):
    from induction.plots import save_figure

    report = track(tiny_run, quick_track_config(cache=False))
    report.phase_change = PhaseChange(step=5, start_step=3, end_step=10)
    fig = report.plot()
    steps = [c.step for c in report.checkpoints if c.step >= 1]
    prefix_l1h2 = next(t for t in fig.data if t.name == "L1H2")
    assert list(prefix_l1h2.x) == steps
    assert list(prefix_l1h2.y) == [next(h["prefix_matching"] for h in c.heads if (h["layer"], h["head"]) == (1, 2))
                                   for c in report.checkpoints if c.step >= 1]
    assert fig.layout.xaxis.type == "log"
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert rects and all((s.x0, s.x1) == (3, 10) for s in rects)
    save_figure(report.plot(), tmp_path / "formation.html")
    assert "ICL score" in (tmp_path / "formation.html").read_text()


# ---- the real thing (slow) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_tracks(tmp_path_factory) -> dict[int, TrackReport]:
    root = tmp_path_factory.mktemp("default")
    return {n: track(train(TrainConfig.from_flat(n_layers=n), root / f"{n}l", progress=False)) for n in (2, 1)}


@pytest.mark.slow
def test_default_two_layer_run_has_a_phase_change_and_one_layer_run_none(default_tracks):
    two = default_tracks[2]
    pc = two.phase_change
    assert pc is not None, two.summary()
    assert 100 <= pc.start_step <= pc.step <= pc.end_step <= 1000
    before = [c for c in two.checkpoints if c.step <= pc.start_step]
    after = [c for c in two.checkpoints if c.step >= pc.end_step]
    assert len(before) >= 15 and len(after) >= 5  # the plateau and the aftermath are both resolved
    # Best prefix-matching rises past 0.5 and the ICL score falls, together, inside the window.
    assert max(c.best_prefix_matching for c in before) < 0.5 < min(c.best_prefix_matching for c in after)
    assert max(c.icl_score for c in after) < min(c.icl_score for c in before) - 1.0
    assert max(c.held_out_loss for c in after) < min(c.held_out_loss for c in before) - 1.0
    assert two.checkpoints[-1].induction_heads and not any(c.induction_heads for c in before)
    one = default_tracks[1]
    assert one.phase_change is None
    assert max(c.best_prefix_matching for c in one.checkpoints) < 0.2


# ---- the CLI ------------------------------------------------------------------------------------

def test_cli_track_writes_the_contract_json_and_the_figure(tiny_run, tmp_path, capsys):
    import shutil

    from induction.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out, plot = tmp_path / "track.json", tmp_path / "track.html"
    argv = ["track", str(run), "-q", "--prompts", "8", "--bootstrap", "0", "--icl-sequences", "8",
            "--held-out-sequences", "8", "--format", "json", "--out", str(out), "--plot", str(plot)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert set(report) == {"run", "checkpoints", "phase_change", "transience", "audit", "provenance"}
    assert [c["step"] for c in report["checkpoints"]] == [0, 1, 3, 10, 12]
    assert report["provenance"]["seed"] == 0 and report["provenance"]["runtime_s"] > 0
    assert "transformer-lens" in report["provenance"]["versions"]
    assert "ICL score" in plot.read_text()
    assert (run / "track").is_dir()  # cached for the next call
    assert main(["track", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err and "--revisions" in err


def test_track_estimates_copying_per_checkpoint_within_its_error_and_keys_the_method(tiny_run):
    """Each checkpoint's sampled copying score sits within its reported error of the exhaustive one;
    the method is in the provenance, and its settings are part of the cache key."""
    from statistics import NormalDist

    quick = quick_track_config(cache=False)

    def with_detector(**changes) -> TrackConfig:
        return replace(quick, scan=replace(quick.scan, detector=replace(quick.scan.detector, **changes)))

    base = with_detector(prompts=RepeatedTokensConfig(n_prompts=32))

    keys = {cfg.cache_key() for cfg in (quick, with_detector(copying_sources=8), with_detector(copying_seed=5),
                                        with_detector(copying_sources=0))}
    assert len(keys) == 4
    exhaustive = track(tiny_run, replace(base, scan=replace(base.scan, detector=replace(base.scan.detector,
                                                                                          copying_sources=0))))
    sampled = track(tiny_run, base)
    assert sampled.provenance["settings"]["copying_estimate"]["method"] == "sampled"
    assert sampled.provenance["settings"]["copying_estimate"]["sources_per_prompt"] == 4
    assert exhaustive.provenance["settings"]["copying_estimate"]["method"] == "exhaustive"
    z95 = NormalDist().inv_cdf(0.975)
    inside = []
    for est, exact in zip(sampled.checkpoints, exhaustive.checkpoints):
        for h, e in zip(est.heads, exact.heads):
            assert e["copying_se"] == 0.0 and h["prefix_matching"] == e["prefix_matching"]
            inside.append(abs(h["copying"] - e["copying"]) <= z95 * h["copying_se"])
    assert np.mean(inside) >= 0.8


def test_cached_results_need_the_offset_fields_and_accept_null_offsets():
    """valid_result: the shifted-induction fields must be there; null (unscored) passes, NaN does not."""
    from induction.jobs.track import valid_result

    head = {"layer": 0, "head": 0, "prefix_matching": 0.1, "copying": 0.2, "copying_ov": 0.3, "previous_token": 0.0,
            "duplicate_token": 0.9, "is_induction": False, "induction_offset": 0, "offset_prefix_matching": 0.9,
            "offset_copying": None, "is_shifted_induction": False}
    result = {"heads": [head], "held_out_loss": 1.0, "icl_score": None}
    assert valid_result(result)
    for key, bad in (("offset_copying", float("nan")), ("induction_offset", 1.5), ("is_shifted_induction", None)):
        assert not valid_result({**result, "heads": [{**head, key: bad}]}), key
    assert not valid_result({**result, "heads": [{k: v for k, v in head.items() if k != "induction_offset"}]})


def test_the_held_out_batch_is_sized_in_tokens_unless_given():
    """Its full-vocabulary forward is most of what track adds to a scan: 8192 tokens whatever the context."""
    from induction.inputs.repeated import ToyDataConfig
    from induction.jobs.track import HELD_OUT_TOKENS, held_out_count

    toy, gpt2 = ToyDataConfig(d_vocab=128, seq_len=128), ToyDataConfig(d_vocab=50257, seq_len=512)
    assert held_out_count(None, toy) == 64 and held_out_count(None, gpt2) == 16
    assert held_out_count(None, ToyDataConfig(d_vocab=128, seq_len=2 * HELD_OUT_TOKENS)) == 1
    assert held_out_count(5, gpt2) == 5
    with pytest.raises(ValueError, match="held_out_sequences"):
        TrackConfig(held_out_sequences=0)
