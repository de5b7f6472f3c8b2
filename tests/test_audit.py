"""The checkpoint audit of `induction track`: a served suite with planted faults (a step serving the
final model, two byte-identical steps, a step serving an earlier step's weights) is named exactly, the
phase-change fit leaves those out unless asked, and a clean suite has an empty audit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import build_redundant_induction_model, save_redundant_induction_folder

from induction.heads.scores import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import ScanConfig, TrackConfig, track
from induction.loading.models import load_model
from induction.loading.native import save_checkpoint
from induction.measures.audit import audit_checkpoints, fit_mask, relative_distance
from induction.measures.formation import CheckpointScores, phase_change_of

WEIGHTS = {1: 0.0, 10: 1.0, 20: 2.0, 40: 4.0, 100: 8.0}  # step -> induction heads' OV weight ("training")


def quick(**overrides) -> TrackConfig:
    scan = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4), n_bootstrap=0), icl=None)
    return TrackConfig(**{"scan": scan, "held_out_sequences": 2, "cache": False, **overrides})


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """step30: a byte copy of step20; step50: the final model (step100) served; step60: step10's weights
    served again, nudged so the file differs (only the distance can tell)."""
    folder = save_redundant_induction_folder(tmp_path_factory.mktemp("audit") / "suite", WEIGHTS)
    shutil.copytree(folder / "step20", folder / "step30")
    shutil.copytree(folder / "step100", folder / "step50")
    save_checkpoint(build_redundant_induction_model(1.02), folder / "step60", {"bos_token_id": 0})
    return folder


def test_audit_names_exactly_the_planted_checkpoints_and_why(planted):
    report = track(planted, quick())
    audit = report.to_json()["audit"]
    by_step = {s["step"]: s for s in audit["suspect"]}
    assert set(by_step) == {30, 50, 60}
    assert by_step[30]["reasons"] == ["identical_weights"] and by_step[30]["same_as"] == 20
    assert by_step[50]["reasons"] == ["identical_to_final"] and by_step[50]["same_as"] == 100
    assert by_step[60]["reasons"] == ["distance_backwards"] and by_step[60]["same_as"] is None
    assert by_step[60]["name"] == "step60" and audit["excluded_from_fit"] is True
    # The distances are ||theta_t - theta_0|| / ||theta_0||, computed here independently.
    first = dict(load_model(planted / "step1").named_parameters())
    for entry in audit["distances"]:
        model = load_model(planted / f"step{entry['step']}")
        num = sum(float((p.detach().double() - first[n].detach().double()).pow(2).sum()) for n, p in model.named_parameters())
        den = sum(float(p.detach().double().pow(2).sum()) for p in first.values())
        assert entry["distance"] == pytest.approx(math.sqrt(num / den), rel=1e-9, abs=1e-12)
    text = "\n".join(report.summary())
    assert "3 suspect checkpoint(s), left out of the phase-change fit" in text
    assert "step60 at step 60: distance_backwards" in text
    json.dumps(report.to_json())  # serialisable
    fig = report.plot()
    suspect = [t for t in fig.data if t.name == "suspect checkpoint (audit)"]
    assert suspect and sorted(suspect[0].x) == [30, 50, 60] and suspect[0].marker.symbol == "circle-open"


def test_a_clean_suite_has_an_empty_audit(tmp_path):
    folder = save_redundant_induction_folder(tmp_path / "suite", {1: 0.0, 10: 1.0, 100: 8.0})
    audit = track(folder, quick()).to_json()["audit"]
    assert audit["suspect"] == [] and [d["step"] for d in audit["distances"]] == [1, 10, 100]
    assert audit["distances"][0]["distance"] == 0.0
    assert audit["distances"][1]["distance"] < audit["distances"][2]["distance"]


def _scores(step: int, prefix: float, icl: float) -> CheckpointScores:
    head = {"layer": 0, "head": 0, "prefix_matching": prefix, "is_induction": prefix > 0.4}
    return CheckpointScores(step=step, tokens_seen=None, loss=None, held_out_loss=1.0, icl_score=icl, heads=[head])


def test_the_fit_leaves_suspect_checkpoints_out_and_the_estimate_moves():
    """A genuine change at step ~1000; steps 100 and 300 serve the final model (pythia #205's fault).
    Trusted, they drag the fitted change to ~50; left out, the fit finds ~1000 again."""
    steps = [10, 30, 100, 300, 1000, 3000, 10000, 30000]
    prefix = [0.05, 0.05, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9]
    icl = [0.0, 0.0, -1.0, -1.0, -0.5, -1.0, -1.0, -1.0]
    ckpts = [_scores(s, p, c) for s, p, c in zip(steps, prefix, icl)]
    entries = [{"step": s, "name": f"step{s}", "weights_sha256": f"h{s}", "distance": None} for s in steps]
    entries[2]["weights_sha256"] = entries[3]["weights_sha256"] = entries[-1]["weights_sha256"]
    excluded = audit_checkpoints(entries)
    kept = audit_checkpoints(entries, keep_suspect=True)
    assert [(s["step"], s["reasons"], s["same_as"]) for s in excluded.suspect] == [
        (100, ["identical_to_final"], 30000), (300, ["identical_to_final"], 30000)]
    fit = [c for c, keep in zip(ckpts, fit_mask(steps, excluded)) if keep]
    assert [c.step for c in fit] == [10, 30, 1000, 3000, 10000, 30000] and fit_mask(steps, kept) == [True] * 8
    without = phase_change_of(fit)
    trusting = phase_change_of(ckpts)
    assert 900 < without.step <= 1100
    assert trusting.step < 100


def test_distance_rule_on_written_numbers():
    """d_t < (1 - tol) * the running maximum of the genuine checkpoints before it; a suspect one does not
    raise the bar for those after it."""
    d = {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.15, 4: 0.195, 5: 0.3}
    entries = [{"step": s, "name": str(s), "weights_sha256": None, "distance": v} for s, v in d.items()]
    audit = audit_checkpoints(entries, tolerance=0.05)
    assert [(s["step"], s["reasons"]) for s in audit.suspect] == [(3, ["distance_backwards"])]  # 0.195 >= 0.95 * 0.2
    assert audit_checkpoints(entries, tolerance=0.3).suspect == []


def test_relative_distance_is_the_norm_ratio():
    model = build_redundant_induction_model(2.0)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        next(iter(model.parameters())).add_(1.0)
    num = sum(float((p.detach().double() - reference[n].double()).pow(2).sum()) for n, p in model.named_parameters())
    den = sum(float(r.double().pow(2).sum()) for r in reference.values())
    assert relative_distance(model, reference) == pytest.approx(math.sqrt(num / den), rel=1e-12)


def test_cli_keep_suspect_keeps_them_in_the_fit(planted, tmp_path, capsys):
    from induction.cli import main

    base = ["track", str(planted), "--no-cache", "-q", "--device", "cpu", "--prompts", "4", "--no-icl",
            "--held-out-sequences", "2", "--format", "json"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["audit"]["excluded_from_fit"] is True
    assert main([*base, "--keep-suspect"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["audit"]["excluded_from_fit"] is False and len(out["audit"]["suspect"]) == 3


def test_the_reference_copy_is_released_after_scoring(tmp_path):
    from induction.measures import audit

    folder = save_redundant_induction_folder(tmp_path / "suite", {1: 0.0, 10: 1.0})
    track(folder, quick())
    assert audit._REFERENCE == {}


def test_sweep_names_each_runs_suspect_checkpoints(planted, tmp_path):
    from induction.jobs import SweepConfig, SweepTarget, sweep

    clean = save_redundant_induction_folder(tmp_path / "clean", {1: 0.0, 10: 1.0, 100: 8.0})
    report = sweep([SweepTarget(str(planted), label="planted"), SweepTarget(str(clean), label="clean")],
                   SweepConfig(track=quick()))
    lines = report.summary()
    assert any(line.startswith("planted: ") and line.endswith("left out of the fit: steps 30, 50, 60") for line in lines)
    assert any(line.startswith("clean: ") and "suspect" not in line for line in lines)
    runs = {r["label"]: r for r in report.to_json()["runs"]}
    assert [s["step"] for s in runs["planted"]["audit"]["suspect"]] == [30, 50, 60]


def test_a_deleted_first_checkpoint_remeasures_distances_without_rescoring(tmp_path, monkeypatch):
    """A Trainer run with a save limit deletes its oldest checkpoints: the cached scores stay valid, only
    the distances are measured again, from the new first checkpoint."""
    import importlib

    from helpers import CallCounter

    track_job = importlib.import_module("induction.jobs.track.tasks")  # what runs per checkpoint
    folder = save_redundant_induction_folder(tmp_path / "suite", {1: 0.0, 10: 1.0, 20: 2.0, 100: 8.0})
    counter = CallCounter(monkeypatch, track_job)
    first = track(folder, quick(cache=True)).to_json()["audit"]["distances"]
    assert counter.calls == 4 and first[0]["distance"] == 0.0 and first[1]["distance"] > 0
    shutil.rmtree(folder / "step1")
    again = track(folder, quick(cache=True)).to_json()
    assert counter.calls == 4  # nothing rescored
    distances = {d["step"]: d["distance"] for d in again["audit"]["distances"]}
    step10 = dict(load_model(folder / "step10").named_parameters())
    for step in (20, 100):
        model = load_model(folder / f"step{step}")
        num = sum(float((p.detach().double() - step10[n].detach().double()).pow(2).sum()) for n, p in model.named_parameters())
        den = sum(float(p.detach().double().pow(2).sum()) for p in step10.values())
        assert distances[step] == pytest.approx(math.sqrt(num / den), rel=1e-9)
    assert distances[10] == 0.0 and again["audit"]["suspect"] == []
