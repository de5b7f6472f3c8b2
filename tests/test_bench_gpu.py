"""The GPU benchmark (scripts/bench_gpu.py) in-process on a tiny GPT-2: its measurements are of what
they claim (TransformerLens parity, the patching and scan numbers themselves; not its own arithmetic), on the CPU and, with
the `gpu` marker, on CUDA (skipped without it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import circuits
from induction import jobs, load_model


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = load_script("bench_gpu")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_bench_measurements_on_a_tiny_gpt2(tmp_path, device):
    spec = bench.build_model_dir(tmp_path / "gpt2", layers=2, heads=4, d_model=64, vocab=256, n_ctx=64)
    model = load_model(spec, device=device)
    assert bench.model_device(model).type == device
    result = bench.measure_patching(model, batch=4, pos=32, repeats=1, warmup=0)
    # circuits.patch_heads gives TransformerLens' numbers on this device.
    tolerance = 1e-5 if device == "cpu" else 1e-4
    assert result["max_abs_diff_vs_transformer_lens"] <= tolerance
    patched, reference = torch.tensor(result["patched"]), torch.tensor(result["transformer_lens"])
    assert patched.shape == (2, 4) and float((patched - reference).abs().max()) == result["max_abs_diff_vs_transformer_lens"]
    # The reported numbers are those of the public functions called afresh on the same task.
    clean, corrupted, metric = bench.induction_task(model, 4, 32, 0)
    assert clean.device.type == device and result["pos"] == clean.shape[1] == 31  # BOS + 2 x 15
    torch.testing.assert_close(patched, circuits.patch_heads(model, clean, corrupted, metric).float().cpu())
    # The baseline is the corrupted run's metric, so patched - baseline is each head's effect.
    with torch.no_grad():
        assert result["baseline"] == pytest.approx(float(metric(model(corrupted))), abs=1e-5)
    # The scan measurement is `induction scan` at default settings on the loaded model.
    scan = bench.measure_scan(str(spec), device, "float32", repeats=1)
    report = jobs.scan(load_model(spec, device=device), jobs.ScanConfig())
    assert scan["icl_score"] == pytest.approx(report.icl.score, abs=1e-5)
    assert scan["max_prefix_matching"] == pytest.approx(float(report.scores.prefix_matching.max()), abs=1e-6)
    assert (scan["peak_memory_bytes"] is None) == (device == "cpu")
