"""Every job on CUDA gives the CPU's numbers (within float tolerance), also with CUDA as the default
device, as in a notebook that ran `torch.set_default_device("cuda")` (marked `gpu`: skipped without CUDA).

The model runs on CUDA while the seeded samples (prompts, streams, bootstrap, random head sets,
resample permutations) are drawn on the CPU, so both runs see the same tokens; what differs is the
arithmetic in the last digits. `tests/test_default_device.py` checks the same discipline without a GPU.
The sampled copying estimate draws its source positions on the model's device, so the detector here
computes copying exhaustively (`copying_sources=0`), which is the same number on any device.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from helpers import build_fewshot_hand_model, build_induction_model, fewshot_hand_data

from induction import jobs
from induction.heads.config import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.loading.devices import model_device, place
from induction.measures.icl import ICLConfig
from induction.training.config import TrainConfig
from induction.training.train import train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DEVICE = "cuda"
ATOL, RTOL = 1e-3, 1e-3
VOLATILE = {"runtime_s", "created", "versions", "platform", "command", "train_seconds", "device", "device_type"}
DEFAULTS = ["cpu-default", "cuda-default"]


def default_device(which: str):
    """The default device the job runs under: unchanged, or CUDA (scoped to the `with` block)."""
    return torch.device(DEVICE) if which == "cuda-default" else contextlib.nullcontext()


def assert_reports_close(got, expected, path: str = "report") -> None:
    """Equal structure and non-float values; floats within ATOL + RTOL * |expected| (NaN matches NaN)."""
    if isinstance(expected, dict):
        keys = set(expected) - VOLATILE
        assert keys == set(got) - VOLATILE, path
        for key in keys:
            assert_reports_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_reports_close(g, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), path
        if math.isnan(expected):
            assert math.isnan(got), path
        else:
            assert abs(got - expected) <= ATOL + RTOL * abs(expected), f"{path}: {got} vs {expected}"
    else:
        assert got == expected, f"{path}: {got!r} vs {expected!r}"


def on_device(model):
    return place(model, DEVICE)


def small_metric(**kw) -> jobs.MetricSpec:
    return jobs.MetricSpec(**{"sequences": 8, "seq_len": 32, **kw})


def compare(job, make_model, cfg, which: str):
    """`job` on a CPU model, then on a CUDA model under the `which` default device."""
    expected = job(make_model(), cfg)
    with default_device(which):
        model = on_device(make_model())
        assert model_device(model).type == torch.device(DEVICE).type
        got = job(model, cfg)
    assert_reports_close(got.to_json(), expected.to_json())
    return got, expected


@pytest.mark.parametrize("which", DEFAULTS)
def test_scan(which):
    detector = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=16, seq_len=32), copying_sources=0, n_bootstrap=50)
    cfg = jobs.ScanConfig(detector=detector, icl=ICLConfig(n_sequences=16, seq_len=32, n_bootstrap=50))
    got, _ = compare(jobs.scan, build_induction_model, cfg, which)
    assert got.provenance["device"].startswith(DEVICE)
    # The report holds CPU tensors, so figures (`.numpy()`) and sweeps read it on any machine.
    s = got.scores
    tensors = [s.prefix_matching, s.copying, s.copying_se, s.copying_ov, s.previous_token, s.duplicate_token,
               s.is_induction, *s.ci.values(), *s.per_prompt.values()]
    assert all(t.device.type == "cpu" for t in tensors)


@pytest.mark.parametrize("which", DEFAULTS)
def test_scan_on_a_hugging_face_model(hf_dirs, which):
    from induction.loading.models import load_model

    detector = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8, seq_len=32), copying_sources=0, n_bootstrap=20)
    cfg = jobs.ScanConfig(detector=detector, icl=ICLConfig(n_sequences=8, seq_len=32, n_bootstrap=20))
    compare(jobs.scan, lambda: load_model(hf_dirs["gpt2"], device="cpu"), cfg, which)


@pytest.mark.parametrize("which", DEFAULTS)
@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablate(method, which):
    compare(jobs.ablate, build_induction_model, jobs.AblateConfig(method=method, metric=small_metric(), top_k=2, draws=3),
            which)


@pytest.mark.parametrize("which", DEFAULTS)
@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_patch(method, which):
    compare(jobs.patch, build_induction_model, jobs.PatchConfig(method=method, metric=small_metric(name="repeat-loss")),
            which)


HAND_DATA = fewshot_hand_data()


def fewshot_model():
    return build_fewshot_hand_model()


@pytest.mark.parametrize("which", DEFAULTS)
def test_fewshot(which):
    cfg = jobs.FewShotConfig(labels=("gold", "flipped", "random"), shots=(1, 2), n_prompts=16, orders=2,
                             n_bootstrap=50, ablate_top_k=1, ablate_draws=2)
    compare(jobs.fewshot, fewshot_model, cfg, which)


@pytest.mark.parametrize("which", DEFAULTS)
def test_ablate_on_fewshot_prompts(which):
    compare(jobs.ablate, fewshot_model, jobs.AblateConfig(method="resample", metric=small_metric(name="fewshot", seq_len=None)),
            which)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = TrainConfig.from_flat(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=12, n_log_checkpoints=3,
                                checkpoint_every=10)
    return train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


@pytest.mark.parametrize("which", DEFAULTS)
def test_track(tiny_run, which):
    scan = jobs.ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), copying_sources=0,
                                                n_bootstrap=20),
                           icl=ICLConfig(n_sequences=8, n_bootstrap=20))
    expected = jobs.track(tiny_run, jobs.TrackConfig(scan=scan, held_out_sequences=8, cache=False, device="cpu"))
    with default_device(which):
        got = jobs.track(tiny_run, jobs.TrackConfig(scan=scan, held_out_sequences=8, cache=False, device=DEVICE))
    assert got.provenance["device"].startswith(DEVICE)
    assert_reports_close(got.to_json(), expected.to_json())


@pytest.mark.parametrize("which", DEFAULTS)
def test_bench(which):
    cfg = dict(models=("attn-v20-h8",), prompts=16, sequences=8)
    expected = jobs.bench(jobs.BenchConfig(**cfg, device="cpu"))
    with default_device(which):
        got = jobs.bench(jobs.BenchConfig(**cfg, device=DEVICE))
    assert_reports_close(got.to_json(), expected.to_json())
