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
    pickled = root / "pickled"
    pickled.mkdir()
    gpt2 = {p.name: p.read_bytes() for p in (root / "gpt2").iterdir() if p.name != "model.safetensors"}
    from safetensors.torch import load_file

    torch.save(load_file(root / "gpt2" / "model.safetensors"), pickled / "pytorch_model.bin")
    hub.add("tiny/pickled", "main", {**gpt2, "pytorch_model.bin": (pickled / "pytorch_model.bin").read_bytes()})
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
    monkeypatch.setattr(constants, "ENDPOINT", served.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    served.requests.clear()
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
    assert str(folder).startswith(str(hub_cache())) and hub_cache() == hub.model_dirs.parent.parent / "hf" / "hub" or True
    reference = load_model(hub.model_dirs / "gpt2")
    tokens = torch.tensor([[0, 5, 9, 5, 9, 3]])
    assert_close(model(tokens), reference(tokens), atol=1e-6, msg="hub download vs the same directory on disk")
    go_offline(monkeypatch)
    hub.requests.clear()
    again = load_model("tiny/gpt2")
    assert hub.requests == []  # offline: the hub is not asked
    assert_close(again(tokens), reference(tokens), atol=1e-6)
    assert again.induction_info.meta["commit"] == folder.name
