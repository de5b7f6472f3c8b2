"""--device / --dtype: validated before any work, honoured by every job, recorded in provenance."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ROLES, build_induction_model

from induction.cli import main
from induction.loading.devices import DeviceError, place, resolve_device, resolve_dtype
from induction.loading.models import load_model
from induction.loading.native import save_checkpoint

MODEL_COMMANDS = [
    ["scan", "{model}"], ["ablate", "{model}"], ["patch", "{model}"], ["fewshot", "{model}"],
    ["track", "{run}"], ["sweep", "{model}"], ["train", "--out", "{tmp}/run-new"], ["demo", "--out", "{tmp}/demo-new"],
]


@pytest.fixture(scope="module")
def hand_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "hand"
    save_checkpoint(build_induction_model(), path, {"bos_token_id": 0})
    return path


def run_cli(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_device_rules():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(None) is torch.float32
    with pytest.raises(DeviceError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, cuda:N, mps"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="device = cuda:1: CUDA is not available"):
            resolve_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", MODEL_COMMANDS, ids=lambda a: a[0])
def test_every_model_command_refuses_an_absent_gpu_in_one_line(argv, hand_dir, tmp_path, capsys):
    argv = [a.format(model=hand_dir, run=hand_dir, tmp=tmp_path) for a in argv]
    code, out, err = run_cli(capsys, [*argv, "--device", "cuda", "-q"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "--device cuda: CUDA is not available" in lines[0]
    assert not (tmp_path / "run-new").exists() and not (tmp_path / "demo-new").exists()  # nothing written


@pytest.mark.parametrize("argv", MODEL_COMMANDS, ids=lambda a: a[0])
def test_every_model_command_names_a_bad_device_or_dtype(argv, hand_dir, tmp_path, capsys):
    argv = [a.format(model=hand_dir, run=hand_dir, tmp=tmp_path) for a in argv]
    code, _, err = run_cli(capsys, [*argv, "--device", "gpu0", "-q"])
    assert code == 2 and err.count("\n") == 1 and "unknown device 'gpu0'" in err
    code, _, err = run_cli(capsys, [*argv, "--dtype", "float64", "-q"])
    assert code == 2 and err.count("\n") == 1 and "--dtype" in err and "float64" in err


def test_load_model_places_the_model(hand_dir):
    model = load_model(hand_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training
    place(model, "cpu", "float32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bfloat16_scan_agrees_with_float32_and_records_its_dtype(hand_dir, tmp_path, capsys):
    reports = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.json"
        code, _, err = run_cli(capsys, ["scan", hand_dir, "--dtype", dtype, "--device", "cpu", "--prompts", "8",
                                        "--bootstrap", "0", "--icl-sequences", "8", "--format", "json", "--out", out, "-q"])
        assert code == 0, err
        reports[dtype] = json.loads(out.read_text())
    for dtype, report in reports.items():
        assert (report["provenance"]["device"], report["provenance"]["dtype"]) == ("cpu", dtype)
        flagged = [(h["layer"], h["head"]) for h in report["heads"] if h["is_induction"]]
        assert flagged == [ROLES.induction], dtype
    for a, b in zip(reports["float32"]["heads"], reports["bfloat16"]["heads"]):
        assert abs(a["prefix_matching"] - b["prefix_matching"]) < 0.02  # bf16 attention, float32 accumulation
    assert abs(reports["float32"]["icl_score"] - reports["bfloat16"]["icl_score"]) < 0.2


def test_training_under_bfloat16_autocast_keeps_float32_weights(tmp_path):
    from induction.loading.runs import read_manifest
    from induction.training.config import TrainConfig
    from induction.training.train import train

    cfg = TrainConfig.from_flat(d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=3, batch_size=2, n_log_checkpoints=0,
                                checkpoint_every=0)
    run = train(cfg, tmp_path / "run", progress=False, device="cpu", dtype="bfloat16")
    manifest = read_manifest(run)
    assert manifest["hardware"] == [{"from_step": 0, "device": "cpu", "autocast": "bfloat16"}]
    model = load_model(run, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(c["loss"])) for c in manifest["checkpoints"])
    full = train(cfg, tmp_path / "full", progress=False, device="cpu")
    # Autocast changes the arithmetic, so the two runs' final weights differ (but only slightly).
    a, b = load_model(run, device="cpu").W_Q, load_model(full, device="cpu").W_Q
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05
