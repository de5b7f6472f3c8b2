"""Hub names download the ecosystem's way (`induction.loading.hub`), against a hub served on 127.0.0.1.

The served hub (tests/hub_server.py) holds tiny random models of two families on several branches
(tests/hf_models.py): a GPT-2 (`tiny/gpt2`), a Pythia-style GPT-NeoX suite
(`EleutherAI/pythia-tiny`: step0, step1000, step2000 = step1000's weights, step4000, main), a model
published only as ``pytorch_model.bin`` and a gated one. Nothing leaves 127.0.0.1; huggingface_hub
is pointed at the served hub and a temporary cache for each test (`hub` fixture).
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from helpers import assert_close
from hf_models import build_hf_model
from hub_server import LocalHub

from induction.cli import main
from induction.loading.hub import HubError, fetch, hub_cache
from induction.loading.models import load_model
from induction.loading.native import ModelLoadError

SUITE = "EleutherAI/pythia-tiny"
PICKLED_SUITE = "EleutherAI/pythia-tiny-bin"  # step1000 only as pytorch_model.bin (some pythia-12b revisions)
SUITE_STEPS = {"step0": 10, "step1000": 11, "step4000": 12}  # branch -> seed of its weights


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The hub, started once for the module; its models built once."""
    root = tmp_path_factory.mktemp("hub-models")
    hub = LocalHub()
    build_hf_model("gpt2", root / "gpt2", seed=0)
    hub.add("tiny/gpt2", "main", root / "gpt2")
    for branch, seed in SUITE_STEPS.items():
        build_hf_model("neox", root / branch, seed=seed)
        hub.add(SUITE, branch, root / branch)
    hub.add(SUITE, "step2000", root / "step1000")  # a planted duplicate: step1000's weights again
    hub.add(SUITE, "main", root / "step4000")
    hub.add("tiny/gated", "main", root / "gpt2", gated=True)
    hub.add("tiny/private", "main", root / "gpt2", private=True)
    pickled = root / "pickled"
    pickled.mkdir()
    gpt2 = {p.name: p.read_bytes() for p in (root / "gpt2").iterdir() if p.name != "model.safetensors"}
    from safetensors.torch import load_file

    torch.save(load_file(root / "gpt2" / "model.safetensors"), pickled / "pytorch_model.bin")
    hub.add("tiny/pickled", "main", {**gpt2, "pytorch_model.bin": (pickled / "pytorch_model.bin").read_bytes()})
    step1000 = {p.name: p.read_bytes() for p in (root / "step1000").iterdir() if p.name != "model.safetensors"}
    torch.save(load_file(root / "step1000" / "model.safetensors"), pickled / "step1000.bin")
    hub.add(PICKLED_SUITE, "step0", root / "step0")
    hub.add(PICKLED_SUITE, "step1000", {**step1000, "pytorch_model.bin": (pickled / "step1000.bin").read_bytes()})
    hub.start()
    hub.model_dirs = root
    yield hub
    hub.stop()


@pytest.fixture
def hub(served, tmp_path, monkeypatch):
    """huggingface_hub pointed at the served hub, online, with an empty cache in tmp_path and no token."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", served.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("DISABLE_SAFETENSORS_CONVERSION", "1")
    monkeypatch.setenv("INDUCTION_CACHE", str(tmp_path / "induction"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    served.requests.clear()
    served.minimal_refs = False
    served.drop_after.clear()
    served._drop_blobs.clear()
    return served


def go_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_hub_name_downloads_only_what_is_read_then_loads_offline(hub, monkeypatch):
    model = load_model("tiny/gpt2", progress=False)
    folder = fetch("tiny/gpt2", offline=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                       "tokenizer.json", "tokenizer_config.json"]
    assert folder.is_relative_to(hub_cache()) and hub_cache().parent.name == "hf"  # HF_HOME/hub, read at call time
    reference = load_model(hub.model_dirs / "gpt2")
    tokens = torch.tensor([[0, 5, 9, 5, 9, 3]])
    assert_close(model(tokens), reference(tokens), atol=1e-6, msg="hub download vs the same directory on disk")
    go_offline(monkeypatch)
    hub.requests.clear()
    again = load_model("tiny/gpt2")
    assert hub.requests == []  # offline: the hub is not asked
    assert_close(again(tokens), reference(tokens), atol=1e-6)
    assert again.induction_info.meta["commit"] == folder.name


FAST = ["-q", "--prompts", "8", "--seq-len", "32", "--bootstrap", "0", "--no-icl"]
TRACK_FAST = [*FAST, "--held-out-sequences", "2"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# ---- offline ------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_without_a_cached_copy_fails_fast_in_one_line(hub, monkeypatch, capsys, how):
    args = ["scan", "tiny/gpt2", *FAST]
    if how == "flag":
        args.append("--offline")
    else:
        go_offline(monkeypatch)  # after huggingface_hub was imported: read at call time
    start = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - start < 5
    err = one_line_error(capsys)
    assert "not in the Hugging Face cache" in err and "hf download tiny/gpt2" in err
    assert ("--offline" in err) if how == "flag" else ("HF_HUB_OFFLINE=1" in err)
    assert hub.requests == []


def test_a_partly_cached_revision_is_not_used_offline(hub, monkeypatch):
    folder = fetch("tiny/gpt2", progress=False)
    (folder / "model.safetensors").unlink()  # as if the weights never arrived
    with pytest.raises(HubError, match="no weights; fetch it with `hf download tiny/gpt2") as info:
        fetch("tiny/gpt2", offline=True)
    assert "\n" not in str(info.value)


def test_a_cut_short_weights_file_in_the_cache_is_not_used(hub):
    folder = fetch("tiny/gpt2", progress=False)
    blob = (folder / "model.safetensors").resolve()  # the snapshot links the blob
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(HubError, match=r"incomplete: model.safetensors has \d+ of its \d+ bytes; fetch it with") as info:
        fetch("tiny/gpt2", offline=True)
    assert "\n" not in str(info.value)


# ---- the hub's refusals, one line each ------------------------------------------------------------

def test_gated_model_needs_a_token(hub, monkeypatch, capsys):
    assert main(["scan", "tiny/gated", *FAST]) == 2
    err = one_line_error(capsys)
    assert "tiny/gated is gated" in err and "HF_TOKEN" in err and f"{hub.endpoint}/tiny/gated" in err
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="the token in HF_TOKEN has no access"):
        load_model("tiny/gated", progress=False)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    model = load_model("tiny/gated", progress=False)
    tokens = torch.tensor([[0, 4, 7, 4]])
    assert_close(model(tokens), load_model(hub.model_dirs / "gpt2")(tokens), atol=1e-6)


def test_private_model_needs_a_token(hub, monkeypatch, capsys):
    assert main(["scan", "tiny/private", *FAST]) == 2
    assert "no model 'tiny/private' on http://127.0.0.1" in one_line_error(capsys)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert main(["scan", "tiny/private", *FAST]) == 0


@pytest.mark.parametrize("spec, revision, expected", [
    ("tiny/missing", None, "no model 'tiny/missing' on http://127.0.0.1"),
    ("tiny/gpt2", "step999", "tiny/gpt2 has no revision 'step999'"),
])
def test_missing_repository_or_revision_is_one_line(hub, capsys, spec, revision, expected):
    args = ["scan", spec, *FAST] + (["--revision", revision] if revision else [])
    assert main(args) == 2
    assert expected in one_line_error(capsys)


def test_a_connection_lost_mid_file_leaves_nothing_usable(hub, monkeypatch, capfd):
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd.time, "sleep", lambda s: None)  # huggingface_hub's retries wait 1 s each
    hub.drop_after["model.safetensors"] = 1000
    assert main(["scan", "tiny/gpt2", *FAST]) == 2
    err = one_line_error(capfd)  # the process's stderr: huggingface_hub's retry warnings stay off it
    assert "the connection to http://127.0.0.1" in err and "failed" in err and "run again to resume" in err
    snapshots = list(hub_cache().rglob("snapshots/*/model.safetensors"))
    assert snapshots == []  # the half file is never linked into the snapshot
    with pytest.raises(HubError, match="no weights"):
        fetch("tiny/gpt2", offline=True)
    hub.drop_after.clear()
    hub._drop_blobs.clear()
    folder = fetch("tiny/gpt2", progress=False)  # resumes
    assert (folder / "model.safetensors").read_bytes() == (hub.model_dirs / "gpt2" / "model.safetensors").read_bytes()


def test_a_full_disk_is_one_line(hub, monkeypatch, capsys):
    import errno

    import huggingface_hub.file_download as fd

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fd, "http_get", full)
    assert main(["scan", "tiny/gpt2", *FAST]) == 2
    err = one_line_error(capsys)
    assert "the disk is full while downloading tiny/gpt2@main" in err and "HF_HUB_CACHE" in err


# ---- pickled weights ------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_scan_records_the_commit_it_read(hub, capsys):
    assert main(["scan", "EleutherAI/pythia-tiny", "--checkpoint", "1000", *FAST, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == "step1000"
    assert report["provenance"]["settings"]["hub"] == {"repo": SUITE, "revision": "step1000",
                                                       "commit": hub.repos[SUITE].branches["step1000"]}


def test_pickle_only_hub_model_is_refused_then_read_on_request(hub, capsys):
    assert main(["scan", "tiny/pickled", *FAST]) == 2
    err = one_line_error(capsys)
    assert "pytorch_model.bin" in err and "--allow-pickle" in err and "weights_only=True" in err
    model = load_model("tiny/pickled", allow_pickle=True, progress=False)
    reference = load_model(hub.model_dirs / "gpt2")
    tokens = torch.tensor([[0, 8, 3, 8, 3, 11]])
    assert_close(model(tokens), reference(tokens), atol=1e-6, msg="the .bin's logits vs the safetensors model's")
    assert main(["scan", "tiny/pickled", "--allow-pickle", "--offline", *FAST]) == 0


def test_a_code_running_pickle_runs_nothing_even_with_the_flag(hub, tmp_path, capsys):
    import shutil

    model_dir = tmp_path / "evil"
    shutil.copytree(hub.model_dirs / "gpt2", model_dir)
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    torch.save({"transformer.wte.weight": _Payload(marker)}, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir, allow_pickle=True)
    message = str(info.value)
    assert "\n" not in message and "restricted unpickler refused it" in message and "nothing in it was run" in message
    assert not marker.exists()
    assert main(["scan", str(model_dir), "--allow-pickle", *FAST]) == 2
    assert "restricted unpickler refused it" in one_line_error(capsys)
    assert not marker.exists()


def test_only_the_weight_pickles_are_opened(hub, tmp_path):
    """With the flag, a legitimate pytorch_model.bin loads; the Trainer's pickles beside it are never opened."""
    import shutil

    from safetensors.torch import load_file

    model_dir = tmp_path / "bin"
    shutil.copytree(hub.model_dirs / "gpt2", model_dir)
    torch.save(load_file(model_dir / "model.safetensors"), model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt"):
        torch.save({"state": _Payload(marker)}, model_dir / name)
    import pickle

    (model_dir / "training_args.bin").write_bytes(pickle.dumps(_Payload(marker)))
    model = load_model(model_dir, allow_pickle=True)
    tokens = torch.tensor([[0, 2, 5, 2]])
    assert_close(model(tokens), load_model(hub.model_dirs / "gpt2")(tokens), atol=1e-6)
    assert not marker.exists()


# ---- published checkpoint suites --------------------------------------------------------------------

def test_revision_names_give_steps_and_tokens():
    from induction.loading.revisions import PYTHIA_TOKENS_PER_STEP, revision_step, tokens_seen

    assert [revision_step(n) for n in ("step0", "step143000", "checkpoint-400", "stage1-step1000-tokens4B", "main")] \
        == [0, 143000, 400, 1000, None]
    assert tokens_seen("EleutherAI/pythia-160m", "step1000", 1000) == 1000 * PYTHIA_TOKENS_PER_STEP == 2_097_152_000
    assert tokens_seen("EleutherAI/pythia-160m-deduped", "step0", 0) == 0
    assert tokens_seen("allenai/OLMo-1B", "step20000-tokens84B", 20000) == 84_000_000_000
    assert tokens_seen("allenai/OLMo-2", "stage1-step1000-tokens2.5B", 1000) == 2_500_000_000
    assert tokens_seen("org/model", "step300-tokens630M", 300) == 630_000_000
    assert tokens_seen("stanford-crfm/alias-gpt2-small-x21", "checkpoint-400", 400) is None
    assert tokens_seen("stanford-crfm/alias-gpt2-small-x21", "checkpoint-400", 400, tokens_per_step=524288) == 400 * 524288


def test_auto_picks_log_spaced_revisions_with_the_first_and_last():
    from induction.loading.revisions import pick_log_spaced

    pythia = ["step0"] + [f"step{2 ** i}" for i in range(10)] + [f"step{k * 1000}" for k in range(1, 144)]
    picked = pick_log_spaced(pythia, 8)
    steps = [int(p[4:]) for p in picked]
    assert len(picked) == 8 and picked[0] == "step0" and picked[-1] == "step143000" and steps == sorted(steps)
    # each pick is the nearest branch to an evenly spaced point of log(step + 1)
    import math

    targets = [math.log1p(143000) * k / 7 for k in range(8)]
    for step, target in zip(steps, targets):
        nearest = min((int(p[4:]) for p in pythia), key=lambda s: abs(math.log1p(s) - target))
        assert step == nearest, (step, target)
    assert pick_log_spaced(pythia[:5], 8) == pythia[:5]


def track_json(capsys, args) -> dict:
    assert main(["track", *args, *TRACK_FAST, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_track_downloads_and_scores_each_revision(hub, monkeypatch, capsys, tmp_path):
    from induction.loading.hf_dirs import weights_sha256
    from induction.loading.revisions import PYTHIA_TOKENS_PER_STEP

    report = track_json(capsys, [SUITE, "--revisions", "step0,step1000,step2000,step4000"])
    ckpts = report["checkpoints"]
    assert [c["step"] for c in ckpts] == [0, 1000, 2000, 4000]
    assert [c["tokens_seen"] for c in ckpts] == [s * PYTHIA_TOKENS_PER_STEP for s in (0, 1000, 2000, 4000)]
    # Each revision's numbers are the ones its own directory gives: the scan of that checkpoint on disk.
    assert main(["scan", str(hub.model_dirs / "step4000"), *FAST, "--format", "json"]) == 0
    scanned = {(h["layer"], h["head"]): h["prefix_matching"] for h in json.loads(capsys.readouterr().out)["heads"]}
    assert scanned == {(h["layer"], h["head"]): h["prefix_matching"] for h in ckpts[3]["heads"]}
    heads_1000 = {(h["layer"], h["head"]): h["prefix_matching"] for h in ckpts[1]["heads"]}
    heads_2000 = {(h["layer"], h["head"]): h["prefix_matching"] for h in ckpts[2]["heads"]}
    assert heads_1000 == heads_2000  # the planted duplicate: the same weights score the same
    assert heads_1000 != {(h["layer"], h["head"]): h["prefix_matching"] for h in ckpts[3]["heads"]}
    # Identities: the weights hash read from the hub's listing is the hash of the downloaded files.
    from induction.jobs.track import TrackConfig, plan_track
    from induction.loading.revisions import HubConfig

    plan = plan_track(SUITE, TrackConfig(revisions=("step1000", "step2000"), hub=HubConfig()))
    folder = fetch(SUITE, "step1000", offline=True)
    assert plan.identities[0]["weights_sha256"] == weights_sha256(folder) == weights_sha256(hub.model_dirs / "step1000")
    assert plan.identities[0]["weights_sha256"] == plan.identities[1]["weights_sha256"]
    assert plan.identities[0]["commit"] != plan.identities[1]["commit"]
    cached = {p.stem for p in (tmp_path / "induction" / "track" / "EleutherAI--pythia-tiny").rglob("*.json")}
    assert {f"EleutherAI_pythia-tiny--step{s}" for s in (0, 1000, 2000, 4000)} <= cached  # one entry per revision
    # Offline, the cached results come back without the hub.
    go_offline(monkeypatch)
    hub.requests.clear()
    again = track_json(capsys, [SUITE, "--revisions", "step0,step1000,step2000,step4000"])
    assert hub.requests == []
    assert again["checkpoints"] == ckpts
    assert again["provenance"]["settings"]["checkpoints_cached"] == 4


def test_auto_revisions_without_kept_weights_leave_the_cache_empty(hub, monkeypatch, capsys, tmp_path):
    from huggingface_hub import scan_cache_dir

    from induction.loading.revisions import list_revisions

    assert list_revisions(SUITE) == ["step0", "step1000", "step2000", "step4000"]  # main names no step
    plot = tmp_path / "formation.html"
    report = track_json(capsys, [SUITE, "--revisions", "auto", "--max-revisions", "3", "--no-keep-weights",
                                 "--x-axis", "tokens", "--plot", str(plot)])
    assert [c["revision"] for c in report["checkpoints"]] == ["step0", "step1000", "step4000"]
    assert report["provenance"]["settings"]["track"]["hub"]["keep_weights"] is False
    repos = {r.repo_id: r for r in scan_cache_dir(hub_cache()).repos}
    assert SUITE not in repos or not any(rev.files for rev in repos[SUITE].revisions)  # each deleted once scored
    assert not list(hub_cache().rglob("*.safetensors"))
    assert "tokens seen (log scale)" in plot.read_text()
    # Offline, with the weights gone, the same command still reads every result from the track cache.
    go_offline(monkeypatch)
    hub.requests.clear()
    again = track_json(capsys, [SUITE, "--revisions", "auto", "--max-revisions", "3", "--no-keep-weights"])
    assert hub.requests == [] and again["checkpoints"] == report["checkpoints"]
    assert again["provenance"]["settings"]["checkpoints_cached"] == 3


def test_branches_are_listed_from_a_minimal_refs_answer(hub):
    from induction.loading.revisions import list_revisions

    hub.minimal_refs = True  # only "branches" and "tags", as the notes on the hub list
    assert list_revisions(SUITE) == ["step0", "step1000", "step2000", "step4000"]


def test_offline_auto_lists_the_cached_branches(hub, monkeypatch, capsys):
    from induction.loading.revisions import list_revisions

    fetch(SUITE, "step1000", progress=False)
    fetch(SUITE, "step4000", progress=False)
    go_offline(monkeypatch)
    assert list_revisions(SUITE) == ["step1000", "step4000"]
    assert main(["track", "EleutherAI/pythia-none", "--revisions", "auto", *TRACK_FAST]) == 2
    assert "no branch naming a training step in the Hugging Face cache" in one_line_error(capsys)


def test_formation_axis_in_tokens():
    from induction.measures.formation import CheckpointScores
    from induction.plots.axis import check_x_axis, step_to_x

    points = [CheckpointScores(step=s, tokens_seen=t, loss=None, heads=[], icl_score=None, held_out_loss=1.0)
              for s, t in ((10, 100), (20, 400), (40, 800))]
    assert step_to_x(20, points, "tokens") == 400 and step_to_x(30, points, "tokens") == 600
    assert step_to_x(30, points, "step") == 30
    points.append(CheckpointScores(step=80, tokens_seen=None, loss=None, heads=[], icl_score=None, held_out_loss=1.0))
    with pytest.raises(ValueError, match="tokens seen at step 80 are unknown"):
        check_x_axis("tokens", points)


def test_sweep_tracks_hub_targets_and_overlays_them_against_tokens(hub, capsys, tmp_path):
    runs = tmp_path / "suites.toml"
    runs.write_text(f"""job = "track"
[[runs]]
path = "{SUITE}"
revisions = ["step0", "step1000"]
label = "early"
[[runs]]
path = "{SUITE}"
revisions = "auto"
label = "auto"
""")
    plot = tmp_path / "sweep.html"
    assert main(["sweep", str(runs), *TRACK_FAST, "--max-revisions", "2", "--x-axis", "tokens", "--plot", str(plot),
                 "--format", "json"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in report["runs"]] == ["early", "auto"]
    assert [[c["revision"] for c in r["checkpoints"]] for r in report["runs"]] == [["step0", "step1000"], ["step0", "step4000"]]
    assert report["runs"][1]["checkpoints"][1]["tokens_seen"] == 4000 * 2_097_152
    # step0 in both runs: the same revision gives the same numbers
    assert report["runs"][0]["checkpoints"][0]["heads"] == report["runs"][1]["checkpoints"][0]["heads"]
    assert "tokens seen (log scale)" in plot.read_text()


def test_a_suite_with_a_pickle_only_checkpoint(hub, capsys):
    assert main(["track", PICKLED_SUITE, "--revisions", "step0,step1000", *TRACK_FAST]) == 2
    err = one_line_error(capsys)
    assert "step1000 publishes its weights only as pickles" in err and "--allow-pickle" in err
    pickled = track_json(capsys, [PICKLED_SUITE, "--revisions", "step0,step1000", "--allow-pickle"])
    plain = track_json(capsys, [SUITE, "--revisions", "step0,step1000"])
    for a, b in zip(pickled["checkpoints"], plain["checkpoints"]):  # the same weights, read from a pickle
        assert [h["prefix_matching"] for h in a["heads"]] == [h["prefix_matching"] for h in b["heads"]]
        assert a["held_out_loss"] == b["held_out_loss"]
