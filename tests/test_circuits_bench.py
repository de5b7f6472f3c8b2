"""The patching benchmark (scripts/bench_patching.py), run in-process, and what it measures on a
model with a known induction circuit (the hand-built model of tests/helpers.py)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from test_circuits_models import single_thread  # noqa: F401 (autouse fixture)

import circuits

_SPEC = importlib.util.spec_from_file_location(
    "bench_patching", Path(__file__).parents[1] / "scripts" / "bench_patching.py"
)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_spearman_averages_tied_ranks():
    from induction.common.stats import average_ranks, spearman

    assert average_ranks(torch.tensor([3.0, 1.0, 1.0, 2.0])).tolist() == [3, 0.5, 0.5, 2]
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x**3) == pytest.approx(1)
    assert spearman(x, -x) == pytest.approx(-1)
    # [1, 2, 2, 3] vs [1, 2, 3, 4]: the Pearson correlation of ranks [0, 1.5, 1.5, 3] and [0, 1, 2, 3].
    assert spearman(torch.tensor([1.0, 2, 2, 3]), x) == pytest.approx(0.9486833, abs=1e-6)
    assert bench.spearman is spearman  # the benchmark reports the same statistic


def test_on_the_hand_built_induction_model():
    """Patching the clean [x, x] into the corrupted [x', x] run: the induction head restores the
    second half's log-probability most, the anti-induction head lowers it most, inert heads do
    nothing; attribution patching ranks the heads as exact patching does (Spearman >= 0.9)."""
    from helpers import ROLES, build_induction_model

    model = build_induction_model()
    clean, corrupted, metric = bench.induction_task(model, batch=8, pos=40, seed=0)
    assert (clean[:, 0] == 0).all()  # the model's BOS is kept
    with torch.no_grad():
        baseline = metric(model(corrupted)).item()
        assert metric(model(clean)).item() > baseline + 1
    effect = circuits.patch_heads(model, clean, corrupted, metric) - baseline
    estimate = circuits.attribute_heads(model, clean, corrupted, metric)
    assert divmod(int(effect.argmax()), 4) == ROLES.induction
    assert divmod(int(effect.argmin()), 4) == ROLES.anti_induction
    for inert in (ROLES.inert0, ROLES.inert1):
        assert effect[inert].item() == 0
        assert estimate[inert].item() == 0
    assert bench.spearman(estimate, effect) >= 0.9


@pytest.mark.slow
def test_benchmark_main_in_process(tmp_path):
    out = tmp_path / "bench.json"
    results = bench.main(["--repeats", "3", "--json", str(out)])
    assert out.exists()
    assert results["max_abs_diff_vs_transformer_lens"] <= 1e-5
    assert (results["n_layers"], results["n_heads"], results["d_model"]) == (4, 8, 128)
    assert results["speedup_patch_vs_transformer_lens"] > 1
    assert results["speedup_attribution_vs_patch"] > 1
    assert -1 <= results["spearman_attribution_vs_patch"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "neox", "llama", "neo"])
def test_benchmark_on_every_family_takes_the_fast_path(family):
    """On a random Hugging Face model of each family the benchmark's exact patching takes the
    in-layer shortcut (rotary tables replayed, parallel blocks finished) and matches TL."""
    results = bench.main(["--family", family, "--layers", "2", "--heads", "4", "--d-model", "64", "--repeats", "1"])
    assert results["resumed"] is True
    assert results["max_abs_diff_vs_transformer_lens"] <= 1e-5
    assert results["model"] == f"random Hugging Face {family}"
