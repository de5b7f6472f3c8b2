"""Transience (Singh et al. 2023): `track` flags an ICL score that fades after the phase change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from induction.jobs.scan import ScanConfig
from induction.jobs.track import TrackConfig, track
from induction.loading.models import load_model
from induction.measures.formation import CheckpointScores, PhaseChange
from induction.measures.icl import ICLConfig, icl_score
from induction.measures.transience import TRANSIENCE_THRESHOLD, Transience, detect_transience, transience_of
from induction.reports.track import TrackReport
from induction.training.train import TrainConfig, train

STEPS = [0, 10, 100, 200, 400, 600, 800, 1000]
N_SEQ = 64


def curves(after: dict[int, float], noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Per-sequence ICL scores `[checkpoint, sequence]`: a per-sequence offset shared by every
    checkpoint (sequences differ in difficulty) plus independent noise, around the given means."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0, 1.0, N_SEQ)
    means = {0: 0.0, 10: 0.0, 100: -0.2, 200: -4.0}  # an early dip below every later score, before the phase change ends
    means.update(after)
    return np.stack([means[s] + offset + rng.normal(0, noise, N_SEQ) for s in STEPS])


def checkpoints(values: np.ndarray) -> list[CheckpointScores]:
    heads = [{"layer": 0, "head": 0, "prefix_matching": 0.0, "copying": 0.0, "is_induction": False}]
    return [CheckpointScores(step=s, tokens_seen=None, loss=None, held_out_loss=1.0, icl_score=float(v.mean()),
                             heads=heads, icl_per_sequence=[float(x) for x in v]) for s, v in zip(STEPS, values)]


PHASE = PhaseChange(step=250, start_step=150, end_step=400)


def test_a_fade_after_the_phase_change_is_flagged_and_its_interval_covers_it():
    values = curves({400: -3.0, 600: -3.2, 800: -2.9, 1000: -2.6})  # true fade: -2.6 - (-3.2) = 0.6
    t = transience_of(checkpoints(values), PHASE)
    assert (t.peak_step, t.final_step) == (600, 1000)  # step 200's -4.0 is before the phase change ended
    assert t.fade == pytest.approx(float((values[-1] - values[5]).mean()), abs=1e-12)  # paired mean difference
    assert t.peak_icl == pytest.approx(values[5].mean()) and t.final_icl == pytest.approx(values[-1].mean())
    assert t.fade_ci[0] < 0.6 < t.fade_ci[1] and t.fade_ci[0] < t.fade < t.fade_ci[1]
    assert t.transient and t.fade_ci[0] > TRANSIENCE_THRESHOLD and t.n_sequences == N_SEQ
    # the bootstrap is over sequences, paired: an independent resampling gives the same interval width
    diff = values[-1] - values[5]
    rng = np.random.default_rng(1)
    means = np.array([diff[rng.integers(0, N_SEQ, N_SEQ)].mean() for _ in range(4000)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert t.fade_ci[1] - t.fade_ci[0] == pytest.approx(hi - lo, rel=0.15)


@pytest.mark.parametrize("after", [
    {400: -3.0, 600: -3.0, 800: -3.0, 1000: -3.0},  # flat
    {400: -2.0, 600: -2.5, 800: -3.0, 1000: -3.5},  # still improving: the last checkpoint is the peak
    {400: -3.0, 600: -3.05, 800: -3.0, 1000: -3.0},  # a fade far below the threshold
])
def test_no_fade_is_not_flagged(after):
    t = transience_of(checkpoints(curves(after)), PHASE)
    assert not t.transient and t.fade_ci[0] < TRANSIENCE_THRESHOLD
    assert t.fade >= 0  # the peak is the best checkpoint, so the last one is never better
    if after[1000] < min(v for step, v in after.items() if step != 1000):
        assert (t.peak_step, t.fade, t.fade_ci) == (1000, 0.0, (0.0, 0.0))


def test_no_transience_without_a_phase_change_or_per_sequence_scores():
    cps = checkpoints(curves({400: -3.0, 600: -3.2, 800: -2.9, 1000: -2.6}))
    assert transience_of(cps, None) is None
    cps[3].icl_per_sequence = None
    assert transience_of(cps, PHASE) is None
    assert detect_transience(STEPS, curves({400: -3, 600: -3, 800: -3, 1000: -3}), after_step=2000) is None
    with pytest.raises(ValueError, match=r"\[checkpoint, sequence\]"):
        detect_transience(STEPS, np.zeros((3, 4)), after_step=0)


def test_without_an_interval_the_fade_itself_decides():
    t = detect_transience(STEPS, curves({400: -3.0, 600: -3.2, 800: -2.9, 1000: -2.6}), 400, n_bootstrap=0)
    assert t.fade_ci is None and t.transient == (t.fade > TRANSIENCE_THRESHOLD) and t.transient


def test_report_json_summary_and_figure_carry_it():
    cps = checkpoints(curves({400: -3.0, 600: -3.2, 800: -2.9, 1000: -2.6}))
    t = transience_of(cps, PHASE)
    report = TrackReport(run="r", checkpoints=cps, phase_change=PHASE, transience=t)
    data = json.loads(json.dumps(report.to_json()))
    assert Transience.from_dict(data["transience"]) == t
    assert set(data["transience"]) == {"peak_step", "peak_icl", "final_step", "final_icl", "fade", "fade_ci",
                                       "transient", "threshold", "n_sequences"}
    assert all("icl_per_sequence" not in c for c in data["checkpoints"])  # cached, not in the report
    line = next(s for s in report.summary() if s.startswith("transience:"))
    assert "TRANSIENT" in line and f"{t.fade:+.3f}" in line and "step 600" in line
    fig = report.plot()
    marks = [tr for tr in fig.data if tr.name == "ICL peak after the phase change -> last"]
    assert len(marks) == 1 and list(marks[0].x) == [600, 1000]
    assert any("transient: fade" in (a.text or "") for a in fig.layout.annotations)
    assert TrackReport(run="r", checkpoints=cps, phase_change=None).to_json()["transience"] is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=12, n_log_checkpoints=3,
                                checkpoint_every=10)
    return train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


def test_track_caches_each_sequences_icl_score_and_it_matches_the_checkpoints(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = TrackConfig(scan=ScanConfig(icl=ICLConfig(n_sequences=8, n_bootstrap=200)), held_out_sequences=4)
    first = track(run, cfg)
    again = track(run, cfg)  # read back from the cache
    assert again.provenance["settings"]["checkpoints_cached"] == len(again.checkpoints)
    for a, b in zip(first.checkpoints, again.checkpoints):
        assert a.icl_per_sequence == b.icl_per_sequence and len(a.icl_per_sequence) == 8
        assert np.mean(a.icl_per_sequence) == pytest.approx(a.icl_score, abs=1e-9)
    # independent: each checkpoint's ICL score, sequence by sequence, from the loaded model
    for c in (again.checkpoints[1], again.checkpoints[-1]):
        direct = icl_score(load_model(run, checkpoint=c.step), n_sequences=8, n_bootstrap=0).per_sequence
        np.testing.assert_allclose(c.icl_per_sequence, direct, rtol=0, atol=1e-6)
    # 12 steps: no phase change, so no transience; with one, the fade is the paired difference
    assert again.phase_change is None and again.transience is None
    t = transience_of(again.checkpoints, PhaseChange(step=1, start_step=1, end_step=1), n_bootstrap=200)
    after = [c for c in again.checkpoints if c.step >= 1]
    peak = min(after, key=lambda c: c.icl_score)
    assert t.peak_step == peak.step and t.final_step == 12
    assert t.fade == pytest.approx(np.mean(np.subtract(after[-1].icl_per_sequence, peak.icl_per_sequence)), abs=1e-9)


@pytest.mark.slow
def test_default_run_is_not_transient(tmp_path):
    """The default recipe at 1000 steps: the ICL score does not fade after the phase change."""
    from induction.training.defaults import default_run

    report = track(default_run("2l"), TrackConfig(cache_dir=None))
    t = report.transience
    assert report.phase_change is not None and t is not None, report.summary()
    assert not t.transient and t.fade_ci[0] < TRANSIENCE_THRESHOLD, report.summary()
    assert t.final_step == 1000 and t.peak_step >= report.phase_change.end_step
