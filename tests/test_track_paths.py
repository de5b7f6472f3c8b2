"""`track --paths` and `patch --paths` / `--method atp-star` end to end: the CLI's JSON, the per-checkpoint
path effects (the same numbers as path-patching the loaded checkpoint), their cache, and the summary."""

import json

import pytest
import torch
from helpers import build_induction_model

from induction.cli import main
from induction.heads.scores import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import TrackConfig, track
from induction.jobs.scan import ScanConfig
from induction.loading.models import load_model
from induction.loading.native import save_checkpoint
from induction.measures.icl import ICLConfig, icl_tokens
from induction.measures.paths import repeat_loss_path_effects


@pytest.fixture(scope="module")
def revision_folder(tmp_path_factory):
    """A folder of revisions of the hand-built induction model: at step 10 its previous-token head
    writes nothing (no key path can form), at step 100 it is intact."""
    folder = tmp_path_factory.mktemp("revisions") / "model"
    intact = build_induction_model()
    save_checkpoint(intact, folder / "step100", {"bos_token_id": 0})
    broken = build_induction_model()
    state = broken.state_dict()
    d_head = broken.cfg.d_head
    state["blocks.0.attn.o.weight"][:, :d_head] = 0.0  # L0H0's output
    broken.load_state_dict(state)
    save_checkpoint(broken, folder / "step10", {"bos_token_id": 0})
    return folder


def quick_config(**overrides) -> TrackConfig:
    scan = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0),
                      icl=ICLConfig(n_sequences=8, n_bootstrap=0))
    return TrackConfig(**{"scan": scan, "held_out_sequences": 8, **overrides})


def test_track_paths_finds_the_key_path_forming_and_caches_it(revision_folder):
    report = track(revision_folder, quick_config(paths=True))
    data = json.loads(json.dumps(report.to_json()))
    assert [c["step"] for c in data["checkpoints"]] == [10, 100]
    assert data["paths"]["receivers"] == [[1, 0]]
    assert data["paths"]["senders"] == [[0, h] for h in range(4)]
    early, late = data["checkpoints"]
    for ckpt in (early, late):
        assert {(tuple(p["sender"]), p["input"]) for p in ckpt["paths"]} == {((0, h), x) for h in range(4) for x in "qkv"}
        assert all(set(p) == {"sender", "receiver", "input", "effect", "ci"} for p in ckpt["paths"])
    key = next(p for p in late["paths"] if p["sender"] == [0, 0] and p["input"] == "k")
    assert key["effect"] > 1.0 and key["ci"][0] > 0
    assert all(abs(p["effect"]) < 1e-4 for p in early["paths"])  # nothing to noise: L0H0 writes nothing
    formation = data["paths"]["formation"]
    assert formation["k"]["formed_step"] == 100 and formation["k"]["significant_step"] == 100
    # Every resample of the sequences sees the key path form at the intact step.
    assert formation["k"]["formed_step_ci"] == [100.0, 100.0] and formation["k"]["formed_share"] == 1.0
    assert len(late["path_inputs"]["k"]["per_prompt"]) == 8
    assert late["path_inputs"]["k"]["effect"] == pytest.approx(sum(p["effect"] for p in late["paths"] if p["input"] == "k"))
    assert formation["q"]["formed_step"] is None and formation["v"]["formed_step"] is None
    assert any("key paths: final" in line and "step 100" in line for line in report.summary())
    # One source for every number: the loaded checkpoint path-patched directly.
    model = load_model(revision_folder / "step100")
    tokens, _ = icl_tokens(model, quick_config().scan.icl)
    direct = repeat_loss_path_effects(model, tokens, [(1, 0)], [(0, h) for h in range(4)], seed=0)
    assert [p["effect"] for p in late["paths"]] == pytest.approx(direct.effects.tolist(), abs=1e-6)
    # A second track reads every path result from the cache; a plain track keeps its own cache key.
    again = track(revision_folder, quick_config(paths=True))
    assert again.paths["computed"] == 0 and again.paths["cached"] == 2
    assert again.to_json()["checkpoints"] == report.to_json()["checkpoints"]
    plain = track(revision_folder, quick_config())
    assert plain.provenance["settings"]["cache_key"] == report.provenance["settings"]["cache_key"]
    assert plain.provenance["settings"]["checkpoints_computed"] == 0 and "paths" not in plain.to_json()
    report.plot()  # the formation figure with its paths panel


def test_patch_paths_cli_names_the_planted_path(handbuilt_dir, tmp_path, capsys):
    out = tmp_path / "paths.json"
    argv = ["patch", str(handbuilt_dir), "--paths", "--metric", "repeat-loss", "--sequences", "8", "--receivers",
            "L1H0,L1H1", "-q", "--format", "json", "--out", str(out), "--plot", str(tmp_path / "paths.html")]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["method"] == "path" and data["metric"] == "repeat-loss" and "provenance" in data
    named = {(tuple(p["sender"]), tuple(p["receiver"]), p["input"]) for p in data["paths"] if p["named"]}
    # The previous-token head L0H0 reaches both the induction and the anti-induction head through their keys.
    assert named == {((0, 0), (1, 0), "k"), ((0, 0), (1, 1), "k")}
    assert len(data["paths"]) == 4 * 2 * 3 and (tmp_path / "paths.html").exists()
    assert main(["patch", str(handbuilt_dir), "--receivers", "L1H0", "-q"]) == 2
    assert "--paths" in capsys.readouterr().err
    assert main(["patch", str(handbuilt_dir), "--paths", "--receivers", "L1X0", "-q"]) == 2
    assert main(["patch", str(handbuilt_dir), "--paths", "--method", "attribution", "-q"]) == 2
    assert "method must be exact" in capsys.readouterr().err


def test_patch_atp_star_cli_reports_grad_drop(handbuilt_dir, tmp_path, capsys):
    out = tmp_path / "atp.json"
    argv = ["patch", str(handbuilt_dir), "--method", "atp-star", "--sequences", "8", "-q", "--format", "json",
            "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["method"] == "atp-star"
    heads = {(h["layer"], h["head"]): h for h in data["heads"]}
    assert all("grad_drop" in h for h in heads.values())
    # Restoring the previous-token head restores ICL (lowers the score); attribution cannot see it.
    assert heads[(0, 0)]["effect"] < -0.5 and heads[(0, 0)]["grad_drop"] > 0.5
    assert torch.isfinite(torch.tensor([h["value"] for h in data["heads"]])).all()


@pytest.mark.slow
def test_the_default_models_key_path_forms_with_the_phase_change(tmp_path):
    """The trained default 2-layer run (minutes uncached): the key paths into the final induction heads
    carry the effect at the end, the query and value paths far less, and the key paths are ~0 well
    before the phase change and formed by its end."""
    import shutil

    from induction.training.defaults import default_run

    run = tmp_path / "run"
    source = default_run("2l", progress=False)
    shutil.copytree(source / "checkpoints", run / "checkpoints")
    shutil.copy(source / "manifest.json", run / "manifest.json")
    report = track(run, TrackConfig(paths=True))
    pc, formation = report.phase_change, report.path_formation()
    assert pc is not None and formation is not None
    k = formation["k"]
    assert k["final_ci"][0] > 0
    assert abs(formation["q"]["final_effect"]) + abs(formation["v"]["final_effect"]) < 0.25 * k["final_effect"]
    points = [c for c in report.checkpoints if c.path_inputs]
    peak = max(c.path_inputs["k"]["effect"] for c in points)
    early = [c.path_inputs["k"]["effect"] for c in points if c.step <= pc.start_step / 2]
    assert early and max(early) < 0.25 * peak
    assert k["formed_step"] is not None and k["formed_step"] <= pc.end_step
