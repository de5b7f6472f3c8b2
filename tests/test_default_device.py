"""Device discipline without a GPU: every job gives the same numbers whatever the default device.

Users often run `torch.set_default_device("cuda")` with the model on CUDA and CPU generators. Then a
tensor the toolkit creates without naming its device lands on the GPU by accident: a crash where it
meets a CPU tensor, or a seeded sample that differs between machines. The rules: every tensor the
toolkit creates names its device (the model's, or "cpu" for sampling, bookkeeping and statistics),
and seeded sampling happens on the CPU, then moves to the model.

How this is checked here, on the CPU only:

- Statically (`test_every_tensor_creation_names_its_device`): every `torch.zeros/ones/full/empty/
  arange/tensor/as_tensor/rand*/randperm/eye/linspace/Generator(...)` call in `induction/`,
  `circuits/` and `scripts/` passes `device=`, on every code path, run or not.
- Dynamically: each job runs once normally and once with the default device set to ``meta`` (the
  `torch.device("meta")` context manager, which scopes the default to the `with` block and restores
  it however the block exits, unlike the global `torch.set_default_device`). The model's own forward
  is unaffected: TransformerLens and transformers name the device of every tensor they create in a
  forward (a plain forward and `run_with_cache` under ``meta`` give the CPU result exactly, for the
  hand-built model and the tiny Hugging Face families alike; `torch.Generator()` ignores the default
  device). A tensor the toolkit creates on the default device becomes a meta tensor (a shape without
  values), which either breaks the job or changes its numbers, so:

  1. `DefaultDeviceCreations`, a `TorchFunctionMode` stacked inside the ``meta`` context (so it sees
     each call before the context fills in its device), records every torch call that names no
     device and returns a meta tensor although none of its tensor inputs is one, i.e. that put a
     tensor on the default device, when the first frame outside torch that made the call is a file
     of `induction/` or `circuits/`. The test fails listing those file:line sites (a precise
     diagnosis, even when the job crashes later or the meta tensor only feeds a shape).
  2. The job's report (`to_json`, without run times, timestamps and versions) must be identical to
     the normal run's, to the last bit.

Building or loading a model (inside `track` and `bench`) puts its parameters on the default device,
as torch modules do, and that is intended (the user's default chooses where a model is built; the
jobs then `place` it); a meta model has no weights, so the tests build those on the CPU (the loader
inside a `torch.device("cpu")` block). A CUDA run of the same jobs is `tests/test_gpu_jobs.py`.
"""

from __future__ import annotations

import ast
import importlib
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import build_fewshot_hand_model, build_induction_model, fewshot_hand_data
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import circuits
from induction import jobs
from induction.common.stats import bootstrap_mean_ci, spearman
from induction.heads.config import ScoreConfig
from induction.heads.implied import implied_circuit, lag_attention
from induction.heads.scores import build_prompts
from induction.inputs.prompts import RepeatedTokensConfig, repeated_random_tokens
from induction.inputs.repeated import ToyDataConfig, sample_batch
from induction.inputs.streams import sample_stream, training_data
from induction.loading.models import ModelRef
from induction.measures.icl import ICLConfig, stream_tokens
from induction.measures.metrics import corrupt
from induction.training.config import TrainConfig
from induction.training.train import train

bench_job = importlib.import_module("induction.jobs.bench")  # the module (`induction.jobs.bench` is the job)
ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = tuple(str(ROOT / name) + "/" for name in ("induction", "circuits"))
TORCH = str(Path(torch.__file__).resolve().parent) + "/"
VOLATILE = {"runtime_s", "created", "versions", "platform", "command", "train_seconds"}


class DefaultDeviceCreations(TorchFunctionMode):
    """Records the toolkit call sites (file:line) of torch calls that put a tensor on the default
    device (module docstring, point 1); use inside a `torch.device("meta")` block."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if kwargs.get("device") is None and any(t.is_meta for t in outs):
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if not any(t.is_meta for t in inputs):
                site = self._caller()
                if site is not None:
                    self.sites.add(f"{site} ({getattr(func, '__name__', func)})")
        return out

    @staticmethod
    def _caller() -> str | None:
        """The first frame outside torch and this file, if it is toolkit code."""
        frame = sys._getframe(2)
        while frame is not None:
            name = str(Path(frame.f_code.co_filename).resolve())
            if not name.startswith(TORCH) and name != str(Path(__file__).resolve()):
                if name.startswith(TOOLKIT):
                    return f"{Path(name).relative_to(ROOT)}:{frame.f_lineno}"
                return None
            frame = frame.f_back
        return None


@contextmanager
def meta_default():
    """The default device is meta inside; yields the recorder of toolkit creations on it."""
    recorder = DefaultDeviceCreations()
    with torch.device("meta"), recorder:
        yield recorder


def comparable(value):
    """A report's JSON without what differs between two identical runs (times, dates, versions)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def assert_same_under_meta(job, *args, **kwargs):
    """Run `job` normally and under a meta default device: no toolkit creation on the default device,
    and the same report. Returns the normal run's report."""
    expected = job(*args, **kwargs)
    error = None
    with meta_default() as recorder:
        try:
            got = job(*args, **kwargs)
        except Exception as exc:  # the sites below are the diagnosis; the error is secondary
            error = exc
    assert torch.get_default_device() == torch.device("cpu")
    assert not recorder.sites, "tensors created on the default device at:\n" + "\n".join(sorted(recorder.sites))
    if error is not None:
        raise error
    assert comparable(got.to_json()) == comparable(expected.to_json())
    return expected


@pytest.fixture(scope="module")
def model():
    return build_induction_model()


def small_metric(**kw) -> jobs.MetricSpec:
    return jobs.MetricSpec(**{"sequences": 4, "seq_len": 24, **kw})


def test_the_recorder_sees_a_toolkit_creation_and_ignores_the_model_forward(model):
    """The check itself: a forward records nothing and changes nothing under meta; a toolkit-style
    creation without a device is recorded (from this file it is not toolkit code, so a helper
    compiled as if in `induction/` makes the call)."""
    tokens = torch.randint(1, 24, (2, 20), generator=torch.Generator(device="cpu").manual_seed(0), device="cpu")
    expected = model(tokens)
    with meta_default() as recorder:
        got = model(tokens)
        after_forward = set(recorder.sites)
        scope = {"torch": torch}
        exec(compile("made = torch.zeros(3)", str(ROOT / "induction" / "fake.py"), "exec"), scope)
    assert not after_forward and torch.equal(got, expected)
    assert scope["made"].is_meta and recorder.sites == {"induction/fake.py:1 (zeros)"}


def build_on_cpu(monkeypatch, owner, name: str) -> None:
    """From now on in this test, `owner.name` (which builds or loads a model) runs with the CPU as
    default device (module docstring)."""
    original = getattr(owner, name)

    def on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, on_cpu)


CREATORS = {"zeros", "ones", "full", "empty", "empty_strided", "arange", "range", "linspace", "logspace", "eye",
            "tensor", "as_tensor", "asarray", "scalar_tensor", "rand", "randn", "randint", "randperm", "normal",
            "Generator"}


def test_every_tensor_creation_names_its_device():
    """Rule 1 on every code path, run or not: each `torch.<creator>(...)` call of the toolkit and its
    scripts passes `device=` (`*_like` and `new_*` follow their input; `from_numpy` is the CPU)."""
    missing = []
    for path in sorted(p for folder in ("induction", "circuits", "scripts") for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CREATORS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and not any(k.arg == "device" for k in node.keywords)
                    and not (node.func.attr == "Generator" and node.args)):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} torch.{node.func.attr}")
    assert not missing, "tensor creations without a device:\n" + "\n".join(missing)


# ---- the jobs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["handbuilt", "gpt2", "llama"])
def test_scan(model, hf_bridges, family):
    """The detector (sampled copying, bootstrap intervals) and the ICL score (synthetic stream, bootstrap)."""
    target = model if family == "handbuilt" else hf_bridges[family]
    detector = ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8, seq_len=32), n_bootstrap=20, copying_sources=4)
    icl = ICLConfig(n_sequences=8, seq_len=32, n_bootstrap=20)
    assert_same_under_meta(jobs.scan, target, jobs.ScanConfig(detector=detector, icl=icl))


def test_offsets_and_implied_circuit(model):
    prompts = build_prompts(model, RepeatedTokensConfig(n_prompts=8, seq_len=32))

    def run():
        from reference.offsets import score_offsets

        scores = score_offsets(model, prompts, batch_size=4)
        lags = lag_attention(model, prompts.tokens, 6, prompts.first_content_pos)
        circuit = implied_circuit(model, 1, 0, 1, prompts.tokens, prompts.first_content_pos)
        return scores, lags, circuit

    expected = run()
    with meta_default() as recorder:
        got = run()
    assert not recorder.sites, sorted(recorder.sites)
    for name in ("support", "attention", "copying"):
        torch.testing.assert_close(getattr(got[0], name), getattr(expected[0], name), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0, equal_nan=True)
    assert comparable(got[2].to_dict()) == comparable(expected[2].to_dict())


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablate(model, method):
    """Per-head ablation and the top-2 set against layer-matched random sets."""
    assert_same_under_meta(jobs.ablate, model, jobs.AblateConfig(method=method, metric=small_metric(), top_k=2, draws=2))


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_patch(model, method):
    assert_same_under_meta(jobs.patch, model, jobs.PatchConfig(method=method, metric=small_metric(name="repeat-loss")))


def test_ablate_on_fewshot_prompts(fewshot_model):
    metric = small_metric(name="fewshot", shots=2, seq_len=None)
    assert_same_under_meta(jobs.ablate, fewshot_model, jobs.AblateConfig(method="resample", metric=metric))


HAND_DATA = fewshot_hand_data()


@pytest.fixture(scope="module")
def fewshot_model():
    return build_fewshot_hand_model()


@pytest.mark.parametrize("task", ["lookup", "rule"])
def test_fewshot(fewshot_model, task):
    """Label variants (derangements, random labels), demonstration orders, bootstrap, head-set ablation."""
    cfg = jobs.FewShotConfig(task=task, labels=("gold", "flipped", "random"), shots=(1, 2), n_prompts=8, orders=2,
                             n_bootstrap=20, ablate_top_k=1, ablate_draws=2)
    assert_same_under_meta(jobs.fewshot, fewshot_model, cfg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=12, n_log_checkpoints=3,
                                checkpoint_every=10)
    return train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)


def test_track(tiny_run, monkeypatch):
    """Every checkpoint's detector, ICL score and held-out loss (the run's own stream), uncached."""
    scan = jobs.ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=10),
                           icl=ICLConfig(n_sequences=8, n_bootstrap=10))
    cfg = jobs.TrackConfig(scan=scan, held_out_sequences=4, cache=False, device="cpu")
    build_on_cpu(monkeypatch, ModelRef, "load")
    assert_same_under_meta(jobs.track, tiny_run, cfg)


def test_bench(monkeypatch):
    """One small hand-built model against every method (offset scores, ablations, patching, random)."""
    cfg = jobs.BenchConfig(models=("attn-v20-h8",), prompts=8, sequences=4, device="cpu")
    build_on_cpu(monkeypatch, bench_job, "suite_model")
    assert_same_under_meta(jobs.bench, cfg)


# ---- seeded samples ------------------------------------------------------------------------------


def seeded_samples(model) -> dict[str, object]:
    """Every seeded sample the jobs draw, from fixed seeds."""
    gen = lambda seed: torch.Generator(device="cpu").manual_seed(seed)  # noqa: E731
    toy = ToyDataConfig(d_vocab=24, seq_len=32, bos_token_id=0)
    tokens = sample_batch(toy, 6, gen(1))
    samples = {
        "prompts": repeated_random_tokens(RepeatedTokensConfig(n_prompts=6, seq_len=32), 24, 48, 0).tokens,
        "stream": tokens,
        "icl_stream": stream_tokens(model, 6, 2, 32)[0],
        "corrupted": corrupt(tokens, 24, True, gen(3)),
        "bootstrap": bootstrap_mean_ci([0.1, 0.5, -0.2, 0.9, 0.3], 50, seed=4),
        "spearman": spearman(torch.tensor([3.0, 1.0, 2.0, 2.0], device="cpu"), torch.tensor([1.0, 0.0, 2.0, 3.0], device="cpu")),
        "head_sets": circuits.layer_matched_random_heads(model, [(1, 0), (0, 0)], n_draws=3, seed=5),
        "derangement": circuits.derangement(7, gen(6)),
        "composition_baseline": circuits.composition_baseline(16, 4, 8, seed=7),
    }
    for kind in ("fewshot", "mixture", "prior", "tasks"):
        samples[kind] = sample_stream(training_data(kind, 64, 48), 4, gen(8))
    return samples


def test_seeded_samples_do_not_depend_on_the_default_device(model):
    expected = seeded_samples(model)
    with meta_default() as recorder:
        got = seeded_samples(model)
    assert not recorder.sites, sorted(recorder.sites)
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[name].device.type == "cpu" and torch.equal(got[name], value), name
        else:
            assert got[name] == value, name
