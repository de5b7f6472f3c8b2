"""Loading and saving models: checkpoints round-trip exactly, bad files give one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import build_induction_model, save_tiny_hf_gpt2
from safetensors.torch import save_file

from induction.common.fileio import write_json_atomic
from induction.loading.models import load_model
from induction.loading.native import ModelLoadError, boot_native, native_config, save_checkpoint


@pytest.mark.parametrize("gpt2_style", [False, True])
def test_checkpoint_round_trip_is_exact(tmp_path, gpt2_style):
    model = boot_native(native_config(attn_only=not gpt2_style, normalization_type="LN" if gpt2_style else None, seed=4))
    save_checkpoint(model, tmp_path / "ck", {"step": 12, "tokens_seen": 100})
    loaded = load_model(tmp_path / "ck")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    tokens = torch.randint(0, 128, (2, 30))
    assert torch.equal(model(tokens), loaded(tokens))
    assert not loaded.training
    assert loaded.induction_info.checkpoint == 12 and loaded.induction_info.meta["tokens_seen"] == 100


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    model = build_induction_model()
    save_checkpoint(model, tmp_path / "ck", {"step": 1})
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("induction.loading.native.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, tmp_path / "ck", {"step": 2})
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp dirs left


def test_run_directory_resolves_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in (0, 10, 20):
        model = boot_native(native_config(n_layers=1, seed=step))
        save_checkpoint(model, run / "checkpoints" / f"step_{step:06d}", {"step": step})
    write_json_atomic(run / "manifest.json", {"checkpoints": [
        {"step": s, "path": f"checkpoints/step_{s:06d}"} for s in (0, 10, 20)]})
    assert load_model(run).induction_info.checkpoint == 20
    m10 = load_model(run, checkpoint=10)
    ref = boot_native(native_config(n_layers=1, seed=10))
    assert torch.equal(m10.W_Q, ref.W_Q)
    with pytest.raises(ModelLoadError, match="no checkpoint at step 15"):
        load_model(run, checkpoint=15)
    with pytest.raises(ModelLoadError, match="run directory, which has no revisions"):  # was ignored
        load_model(run, revision="step10")


def test_huggingface_directory_loads_offline(tmp_path):
    hf = save_tiny_hf_gpt2(tmp_path / "gpt2")
    bridge = load_model(tmp_path / "gpt2")
    assert not bridge.training and bridge.induction_info.kind == "huggingface"
    tokens = torch.randint(0, 60, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)
    assert bridge.induction_info.bos_token_id == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "neither a run directory"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{not json")), "not valid JSON"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text(json.dumps({"d_model": 8})),
                    (p / "model.safetensors").write_bytes(b"x")), "lacks required field"),
        (lambda p: p.write_text("hello"), "is a file"),
    ],
)
def test_bad_model_specs_raise_one_line_errors(tmp_path, setup, message):
    path = tmp_path / "m"
    setup(path)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_corrupt_or_mismatched_weights(tmp_path):
    model = build_induction_model()
    save_checkpoint(model, tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(tmp_path / "ck")
    save_checkpoint(model, tmp_path / "ck2")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["embed.weight"] = state["embed.weight"][:, :10].contiguous()
    save_file(state, str(tmp_path / "ck2" / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="embed.weight has shape"):
        load_model(tmp_path / "ck2")
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "unembed.weight"}
    save_file(state, str(tmp_path / "ck2" / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="lacks tensor unembed.weight"):
        load_model(tmp_path / "ck2")


def test_hub_name_offline_fails_cleanly():
    """The tests run with HF_HUB_OFFLINE=1: a hub name not in the cache fails at once, saying how to fetch it."""
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache .*HF_HUB_OFFLINE=1.*hf download"):
        load_model("no-such-org/no-such-model-xyz")


def test_an_unreachable_hub_is_one_line(monkeypatch, tmp_path):
    """Online (HF_HUB_OFFLINE=0, read at call time) with nothing listening at HF_ENDPOINT: one line, no retries
    for minutes. (Downloads against a served hub: tests/test_hub.py.)"""
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model("no-such-org/no-such-model-xyz")
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "\n" not in message and f"the connection to http://127.0.0.1:{port} failed" in message
