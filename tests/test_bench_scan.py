"""The scan benchmark (scripts/bench_scan.py) on the GPT-2-small-shaped model: `induction scan` and
one checkpoint of `induction track` at default settings each cost at most 3x a plain forward pass
over the same prompts (load included) and peak at or under 3 GiB. Slow (~10 min of CPU on one
thread): `pytest -m slow`."""

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("bench_scan", Path(__file__).parents[1] / "scripts" / "bench_scan.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


@pytest.mark.slow
def test_scan_of_gpt2_small_costs_at_most_three_forward_passes_and_three_gib(tmp_path):
    out = tmp_path / "bench.json"
    status = bench.main(["--track", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["plain"]["prompts"] == [64, 256]
    assert result["scan"]["copying_estimate"]["method"] == "sampled"
    assert result["track"] is not None and result["track_ratio"]["cpu"] <= result["checked_ratio"] <= bench.MAX_RATIO, result
    assert result["checked_peak_gib"] <= bench.MAX_PEAK_GIB, result
    assert status == 0
