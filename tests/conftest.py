"""Test configuration: offline, seeded, and the hand-built model as fixtures."""

from __future__ import annotations

import os

# Any test that would touch the network fails loudly instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The default toy models are trained once into a repo-local cache (fresh in a clean checkout) and
# shared by the demo and notebook tests; set INDUCTION_CACHE to use another.
os.environ.setdefault("INDUCTION_CACHE", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      ".cache", "induction-tests"))

import pytest  # noqa: E402
import torch  # noqa: E402

# The test models are tiny: one thread is faster than two (no oversubscription) and deterministic.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--toy-seed", type=int, default=None,
                     help="train the default toy models from this seed (a stand-in for another machine's "
                          "float rounding); tests on trained toys must pass at seeds 0-4")


def pytest_configure(config):
    seed = config.getoption("--toy-seed")
    if seed is not None:
        os.environ["INDUCTION_DEFAULT_SEED"] = str(seed)


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA: without it they are skipped, not failed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def handbuilt_dir(tmp_path_factory):
    """The hand-built induction model (tests/helpers.py) saved as a checkpoint directory."""
    from helpers import build_induction_model

    from induction.loading.native import save_checkpoint

    path = tmp_path_factory.mktemp("handbuilt") / "model"
    save_checkpoint(build_induction_model(), path, {"bos_token_id": 0})
    return path


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """`hf_dirs[family]`: a tiny random Hugging Face model directory of that family (tests/hf_models.py),
    built on first use, once per session."""
    from hf_models import FamilyDirs

    return FamilyDirs(tmp_path_factory.mktemp("hf-families"))


@pytest.fixture(scope="session")
def hf_bridges(hf_dirs):
    """`hf_bridges[family]`: that family's directory loaded with `induction.load_model`, once per session
    (tests must not modify it)."""
    from induction.loading.models import load_model

    class Bridges(dict):
        def __missing__(self, family):
            self[family] = load_model(hf_dirs[family])
            return self[family]

    return Bridges()
