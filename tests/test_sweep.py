"""`induction sweep`: many runs x track (or models x scan) in one report equal to the runs' own reports."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from induction.cli import main
from induction.heads.config import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import ScanConfig, SweepConfig, SweepTarget, TrackConfig, scan, sweep, track
from induction.jobs.sweep import read_targets
from induction.measures.icl import ICLConfig
from induction.training.config import TrainConfig
from induction.training.train import train

SCAN = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4), n_bootstrap=0),
                  icl=ICLConfig(n_sequences=4, n_bootstrap=0))
CFG = TrackConfig(scan=SCAN, held_out_sequences=4, device="cpu", cache=False)
FAST = ["--prompts", "4", "--bootstrap", "0", "--icl-sequences", "4", "--held-out-sequences", "4", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("sweep")
    out = []
    for seed in (0, 1):
        cfg = TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=4,
                                    n_log_checkpoints=0, checkpoint_every=2, batch_size=2, seed=seed)
        out.append(train(cfg, root / f"seed{seed}", progress=False))
    return out


def test_track_sweep_equals_each_runs_own_track(runs):
    report = sweep([SweepTarget(str(r)) for r in runs], SweepConfig(track=CFG))
    for run, got in zip(runs, report.tracks):
        assert got.to_json()["checkpoints"] == track(run, CFG).to_json()["checkpoints"]
    data = json.loads(json.dumps(report.to_json()))
    assert [r["label"] for r in data["runs"]] == [str(r) for r in runs]
    assert [len(r["checkpoints"]) for r in data["runs"]] == [3, 3] and len(data["phase_changes"]) == 2
    assert data["provenance"]["executor"] == "local"
    rows = report.rows()
    assert [(row["run"], row["step"]) for row in rows] == [(str(r), s) for r in runs for s in (0, 2, 4)]
    fig = report.plot()
    first = next(t for t in fig.data if t.name == str(runs[0]))
    assert list(first.y) == [c.best_prefix_matching for c in report.tracks[0].checkpoints if c.step >= 1]


def test_scan_sweep_equals_each_models_own_scan(runs):
    report = sweep([SweepTarget(str(r), label=f"run {i}") for i, r in enumerate(runs)], SweepConfig(job="scan", scan=CFG.scan, device=CFG.device, dtype=CFG.dtype))
    for run, got in zip(runs, report.scans):
        assert got.heads() == scan(run, SCAN).heads()
    assert [row["run"] for row in report.rows()] == ["run 0", "run 1"]
    assert report.rows()[1]["icl_score"] == report.scans[1].icl.score


def test_targets_from_a_comma_list_or_a_toml_file(runs, tmp_path):
    targets, job = read_targets(f"{runs[0]},{runs[1]}")
    assert [t.path for t in targets] == [str(r) for r in runs] and job is None
    shutil.copytree(runs[0], tmp_path / "a")
    (tmp_path / "s.toml").write_text('job = "scan"\n[[runs]]\npath = "a"\nlabel = "first"\n'
                                     '[[runs]]\npath = "org/model"\nrevisions = ["step1", "step2"]\n')
    targets, job = read_targets(tmp_path / "s.toml")
    assert job == "scan"
    assert targets == [SweepTarget(str(tmp_path / "a"), None, "first"), SweepTarget("org/model", ("step1", "step2"))]


@pytest.mark.parametrize("content, message", [
    ("[[runs]]\nlabel = 'x'\n", "each with a path"),
    ("[[runs]]\npath = 'a'\nseed = 1\n", "unknown key(s) in [[runs]]: seed"),
    ("job = 'fit'\n[[runs]]\npath = 'a'\n", "unknown sweep job 'fit'"),
    ("[[runs\n", "is not valid TOML"),
    ("[[runs]]\npath = 'a'\nrevisions = 'step1000'\n", "revisions must be a non-empty list"),
    ("[[runs]]\npath = 'a'\nrevisions = [1000]\n", "revisions must be a non-empty list"),
    ("[[runs]]\npath = 'a'\nrevisions = []\n", "revisions must be a non-empty list"),
    ("[[runs]]\npath = 'a'\nlabel = 5\n", "label must be a non-empty string"),
    ("[[runs]]\npath = ' '\n", "path is empty"),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, capsys, content, message):
    (tmp_path / "s.toml").write_text(content)
    assert main(["sweep", str(tmp_path / "s.toml"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_sweep_json_and_figure(runs, tmp_path, capsys):
    plot = tmp_path / "sweep.html"
    assert main(["sweep", f"{runs[0]},{runs[1]}", "--format", "json", "--plot", str(plot), "--no-cache", *FAST]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["job"] == "track" and [len(r["checkpoints"]) for r in data["runs"]] == [3, 3]
    assert "best prefix-matching" in plot.read_text()
    assert main(["sweep", f"{runs[0]},{runs[0]}", "-q"]) == 2
    assert "repeated" in capsys.readouterr().err


def test_scan_sweep_checks_every_target_before_scanning_any(runs, tmp_path, monkeypatch):
    sweep_module = importlib.import_module("induction.jobs.sweep")  # the package's `sweep` is the function

    def no_scan(*args, **kwargs):
        raise AssertionError("a model was scanned before the targets were checked")

    monkeypatch.setattr(sweep_module, "scan", no_scan)
    cfg = SweepConfig(job="scan", scan=CFG.scan, device=CFG.device, dtype=CFG.dtype)
    with pytest.raises(ValueError, match="does not exist"):
        sweep([SweepTarget(str(runs[0])), SweepTarget(str(tmp_path / "missing"))], cfg)
    with pytest.raises(ValueError, match="lists 2 revisions; use job = track"):
        sweep([SweepTarget(str(runs[0])), SweepTarget("org/model", ("step1", "step2"))], cfg)
