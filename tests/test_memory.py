"""Memory plans: parameter counts from config.json equal the published ones (formulas written out here),
the plan's peak for a stated job equals a figure computed by hand, the activation estimate bounds the
live tensor bytes measured on small models, attribution goes layer by layer with the same numbers, and
a job that cannot fit is refused in one line before any weights load."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from helpers import assert_close, build_induction_model
from hf_models import build_hf_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import circuits
import induction.common.checks
from induction.heads.scores import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.jobs import ScanConfig
from induction.jobs.plans import effects_phases, memory_plan, scan_phases
from induction.loading.memory import (
    MemoryPlanError,
    attribution_phase,
    forward_phase,
    make_plan,
    read_model_shape,
    shape_from_config,
    shape_of_model,
)
from induction.loading.models import load_model
from induction.measures.metric_spec import MetricSpec

# The published config.json files (the fields that size the model), written here: no weights.
LLAMA3_8B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
             "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "torch_dtype": "bfloat16"}
QWEN2_7B = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
            "intermediate_size": 18944, "num_attention_heads": 28, "num_hidden_layers": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 131072,
            "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "torch_dtype": "bfloat16"}
PYTHIA_12B = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": 5120,
              "intermediate_size": 20480, "num_attention_heads": 40, "num_hidden_layers": 36,
              "vocab_size": 50688, "max_position_embeddings": 2048, "rotary_pct": 0.25,
              "use_parallel_residual": True, "tie_word_embeddings": False, "torch_dtype": "float16"}
GPT2_SMALL = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}


def llama3_8b_count() -> int:
    h, layers, kv_dim, inter, vocab = 4096, 32, 8 * 128, 14336, 128256
    attention = h * h + 2 * h * kv_dim + h * h  # q, k and v (8 of 32 heads), o; no biases
    mlp = 3 * h * inter  # gate, up, down
    norms = 2 * h  # two RMSNorm weights per layer
    return layers * (attention + mlp + norms) + 2 * vocab * h + h  # untied embed and lm_head, final norm


def qwen2_7b_count() -> int:
    h, layers, kv_dim, inter, vocab = 3584, 28, 4 * 128, 18944, 152064
    attention = h * h + h + 2 * (h * kv_dim + kv_dim) + h * h  # q, k, v with biases; o without
    return layers * (attention + 3 * h * inter + 2 * h) + 2 * vocab * h + h


def pythia_12b_count() -> int:
    h, layers, inter, vocab = 5120, 36, 20480, 50688
    attention = 3 * h * h + 3 * h + h * h + h  # fused qkv and dense, with biases
    mlp = h * inter + inter + inter * h + h
    norms = 2 * 2 * h  # two LayerNorms (weight and bias)
    return layers * (attention + mlp + norms) + 2 * vocab * h + 2 * h  # embed_in, embed_out, final LayerNorm


@pytest.mark.parametrize("config, published, formula", [
    (LLAMA3_8B, 8_030_261_248, llama3_8b_count),
    (QWEN2_7B, 7_615_616_512, qwen2_7b_count),
    (PYTHIA_12B, 11_846_072_320, pythia_12b_count),
    (GPT2_SMALL, 124_439_808, None),
])
def test_parameter_counts_from_config_equal_the_published_ones(tmp_path, config, published, formula):
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_model_shape(tmp_path)
    if formula is not None:
        assert formula() == published
    assert shape.parameter_count() == published


def test_scan_peak_of_llama3_8b_in_bfloat16_matches_the_hand_figure():
    """scan with 8 prompts x 256 tokens (detector batch 8, no ICL score) on a GPU, bfloat16."""
    cfg = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8, seq_len=256), batch_size=8), icl=None)
    shape = shape_from_config(LLAMA3_8B)
    plan = make_plan("scan", shape, scan_phases(shape, cfg, "bfloat16"), "cuda", "bfloat16")
    parameters = 8_030_261_248 * 2
    # One block's transients per prompt: 3 attention tensors of 32 x 256 x 256 and 8 residual-width
    # (4096) plus 2 MLP-width (14336) tensors per position, 2 bytes each; the key/value cache of all 32
    # layers (keys and values, 8 heads x 128 per position); logits at one position in bfloat16 plus
    # two float32 copies (2 + 8 bytes per vocabulary entry); and the detector's float32 copy of one
    # layer's pattern for the batch.
    block = 3 * 32 * 256 * 256 + 256 * (8 * 4096 + 2 * 14336)
    kv_cache = 2 * 32 * 256 * 8 * 128
    per_prompt = 2 * (block + kv_cache) + 128256 * (2 + 8)
    activations = 8 * per_prompt + 8 * 32 * 256 * 256 * 4
    assert plan.parameter_bytes == parameters == 16_060_522_496
    assert plan.activation_bytes == activations == 698_126_336
    assert plan.peak_bytes == 16_758_648_832  # host storage is not on the GPU
    assert plan.batch_size == 8
    assert plan.fits(80 * 10**9) and not plan.fits(16 * 10**9)


def test_attribution_on_large_configs_goes_layer_by_layer_where_the_graph_would_not_fit():
    metric = MetricSpec(sequences=32, seq_len=512)
    for config in (LLAMA3_8B, QWEN2_7B, PYTHIA_12B):
        shape = shape_from_config(config)
        params = shape.parameter_count() * 2
        budget = 80 * 2**30 - params
        whole = attribution_phase(shape, "sequences", 32, 32, 512, "bfloat16")
        chosen = effects_phases(shape, metric, "attribution", "bfloat16", budget)[0]
        assert whole.layers_per_backward == shape.n_layers and whole.activation_bytes > budget
        assert chosen.layers_per_backward < shape.n_layers and chosen.activation_bytes <= budget
        plan = make_plan("patch", shape, [chosen], "cuda", "bfloat16")
        assert plan.fits(80 * 2**30) and plan.layers_per_backward == chosen.layers_per_backward
    small = shape_from_config(GPT2_SMALL)  # GPT-2 small's whole graph fits: one backward
    assert effects_phases(small, metric, "attribution", "bfloat16", 80 * 2**30)[0].layers_per_backward == 12


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_layer_by_layer_attribution_gives_the_whole_graph_numbers(tmp_path, family):
    build_hf_model(family, tmp_path, n_layers=4, task_words=False)
    model = load_model(tmp_path, device="cpu")
    gen = torch.Generator().manual_seed(0)
    clean, corrupted = (torch.randint(3, int(model.cfg.d_vocab), (3, 24), generator=gen) for _ in range(2))

    def metric(logits):
        return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()

    whole = circuits.attribute_heads(model, clean, corrupted, metric)
    assert whole.abs().max() > 1e-3
    for k in (1, 3):
        assert_close(circuits.attribute_heads(model, clean, corrupted, metric, layers_per_backward=k), whole,
                     atol=1e-6, rtol=1e-5, msg=f"{k} layers per backward")
    assert all(p.requires_grad for p in model.parameters())  # frozen only for the duration


class LiveBytes(TorchDispatchMode):
    """The peak of the bytes of CPU tensors alive at once among those created while active (a storage
    shared by views counts once; a tensor stops counting when it is freed)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.live[key]
            self.now -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.untyped_storage().data_ptr():
                key = t.untyped_storage().data_ptr()
                if key in self.live:
                    self.live[key][1] += 1
                else:
                    self.live[key] = [t.untyped_storage().nbytes(), 1]
                    self.now += self.live[key][0]
                    self.peak = max(self.peak, self.now)
                weakref.finalize(t, self._release, key)
        return out


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_activation_estimates_bound_the_measured_peaks_within_a_factor_of_two(tmp_path, family):
    """On CPU: the plan's activation bytes against the peak of live tensor bytes (`LiveBytes`), for a
    forward and for attribution patching whole and layer by layer: measured <= planned <= 2 x measured."""
    build_hf_model(family, tmp_path, n_layers=4, task_words=False)
    model = load_model(tmp_path, device="cpu")
    shape = shape_of_model(model)
    batch, n_pos = 4, 64
    gen = torch.Generator().manual_seed(0)
    clean, corrupted = (torch.randint(3, shape.d_vocab, (batch, n_pos), generator=gen) for _ in range(2))
    with torch.no_grad(), LiveBytes() as probe:
        model(clean)
    planned = forward_phase(shape, "", "", None, batch, n_pos).activation_bytes
    assert probe.peak <= planned <= 2 * probe.peak, (probe.peak, planned)
    peaks = {}
    for k in (None, 1):
        with LiveBytes() as probe:
            circuits.attribute_heads(model, clean, corrupted, lambda logits: logits[:, -1, 5].mean(), layers_per_backward=k)
        planned = attribution_phase(shape, "", None, batch, n_pos, layers=k).activation_bytes
        assert probe.peak <= planned <= 2 * probe.peak, (k, probe.peak, planned)
        peaks[k] = probe.peak
    assert peaks[1] < 0.7 * peaks[None]  # one layer's graph at a time holds less


def test_plan_of_a_loaded_model_uses_its_measured_parameters():
    model = build_induction_model()
    plan = memory_plan("scan", model, lambda shape, dtype, budget: scan_phases(shape, ScanConfig(), dtype))
    assert plan.parameter_bytes == sum(p.numel() * 4 for p in model.parameters())
    assert plan.device == "cpu" and plan.dtype == "float32"


def test_refusal_names_the_setting_that_dominates():
    shape = shape_from_config(GPT2_SMALL)
    cfg = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=10**9)), icl=None)
    with pytest.raises(MemoryPlanError, match=r"^n_prompts = 1000000000: scan needs about .*; lower this setting$"):
        make_plan("scan", shape, scan_phases(shape, cfg), "cpu").check(available=64 * 2**30)
    big = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=4096, seq_len=1024), batch_size=4096),
                     icl=None)
    with pytest.raises(MemoryPlanError, match=r"^batch_size = 4096: scan needs about") as info:
        make_plan("scan", shape, scan_phases(shape, big), "cpu").check(available=64 * 2**30)
    assert info.value.field == "batch_size"
    with pytest.raises(MemoryPlanError, match=r"^dtype = float32: .*most for the parameters"):
        make_plan("scan", shape_from_config(LLAMA3_8B), [], "cpu").check(available=16 * 2**30)


def test_cli_refuses_a_job_that_cannot_fit_before_any_weights_load(tmp_path, capsys, monkeypatch):
    """A config-only Llama-3-8B directory (no weights at all): the refusal comes first, in one line, with
    the flag to lower; with room for the weights it still fails, at loading (there are none)."""
    from induction.cli import main

    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    monkeypatch.setattr(induction.common.checks, "available_memory", lambda device="cpu": 20 * 2**30)
    assert main(["scan", str(tmp_path), "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dtype float32: scan needs about 3" in err and err.rstrip().endswith("lower this setting")
    assert main(["scan", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16", "--prompts", "4000",
                 "--batch-size", "4000", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("induction: error: --batch-size 4000: scan needs about")
    assert main(["patch", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16", "--sequences", "512", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sequences 512: patch needs about" in err
    assert main(["scan", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16", "--prompts", "4", "--no-icl", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs about" not in err  # it fits: what fails now is the missing weights


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_activation_estimates_bound_the_cuda_peaks(tmp_path, family):
    """On a GPU: the plan's activation bytes against `torch.cuda.max_memory_allocated` above the
    weights, for a forward and for attribution patching (one warm-up first: cuBLAS workspaces)."""
    build_hf_model(family, tmp_path, n_layers=4, d_model=256, n_heads=8, n_ctx=256, task_words=False)
    model = load_model(tmp_path, device="cuda")
    shape = shape_of_model(model)
    batch, n_pos = 16, 256
    gen = torch.Generator().manual_seed(0)
    clean, corrupted = (torch.randint(3, shape.d_vocab, (batch, n_pos), generator=gen).cuda() for _ in range(2))

    def metric(logits):
        return logits[:, -1, 5].mean()

    def peak(fn) -> int:
        fn()  # warm-up
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    with torch.no_grad():
        measured = peak(lambda: model(clean))
    planned = forward_phase(shape, "", "", None, batch, n_pos).activation_bytes
    assert measured <= planned <= 2.5 * measured, (measured, planned)
    for k in (None, 1):
        measured = peak(lambda: circuits.attribute_heads(model, clean, corrupted, metric, layers_per_backward=k))
        planned = attribution_phase(shape, "", None, batch, n_pos, layers=k).activation_bytes
        assert measured <= planned <= 2.5 * measured, (k, measured, planned)


def test_a_cached_hub_name_is_planned_from_its_cached_config(tmp_path, capsys, monkeypatch):
    """A hub name whose config.json is in the Hugging Face cache (no weights there) is planned and
    refused before anything is loaded or fetched."""
    import huggingface_hub.constants

    from induction.cli import main
    from induction.loading.memory import config_dir

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--big"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps(LLAMA3_8B))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert config_dir("org/big") == repo / "snapshots" / commit
    assert config_dir("org/other") is None  # not cached: planned once loaded instead
    monkeypatch.setattr(induction.common.checks, "available_memory", lambda device="cpu": 20 * 2**30)
    assert main(["scan", "org/big", "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("induction: error: --dtype float32: scan needs about")


def test_a_loaded_models_weights_are_not_counted_twice(monkeypatch):
    """Once loaded, the weights are already out of the free memory: the check adds them back, so a job
    whose activations fit what is left runs, where the same plan before loading would be refused."""
    from induction.jobs.plans import check_plan

    model = build_induction_model()
    cfg = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8)), icl=None)
    phases = lambda shape, dtype, budget: scan_phases(shape, cfg, dtype)  # noqa: E731
    plan = memory_plan("scan", model, phases, available=10**12)
    left = plan.peak_bytes - plan.parameter_bytes  # free once the weights are resident, just enough
    monkeypatch.setattr(induction.common.checks, "available_memory", lambda device="cpu": left)
    assert check_plan("scan", model, phases).peak_bytes == plan.peak_bytes
    with pytest.raises(MemoryPlanError):
        plan.check(available=left)  # the same plan against the same free memory, weights not yet loaded


def test_plan_memory_plans_any_job_from_a_config_only_directory(tmp_path):
    from induction.jobs import PatchConfig, plan_memory

    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    cfg = ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8, seq_len=256), batch_size=8), icl=None)
    scan = plan_memory(tmp_path, "scan", cfg, device="cuda", dtype="bfloat16", available=80 * 10**9)
    assert (scan.device, scan.dtype, scan.peak_bytes) == ("cuda", "bfloat16", 16_758_648_832)  # the hand figure above
    attribution = plan_memory(tmp_path, "patch", PatchConfig(method="attribution"), device="cuda", dtype="bfloat16",
                              available=80 * 10**9)
    assert 1 <= attribution.layers_per_backward < 32 and attribution.peak_bytes <= 80 * 10**9
    exact = plan_memory(tmp_path, "patch", PatchConfig(), device="cuda", dtype="bfloat16", available=80 * 10**9)
    assert exact.layers_per_backward is None and exact.batch_size == 2 * 32
    track = plan_memory(tmp_path, "track", device="cuda", dtype="bfloat16", available=80 * 10**9)
    assert track.host_bytes >= track.parameter_bytes  # the audit's copy of the first checkpoint, on the host
    with pytest.raises(ValueError, match="unknown job 'train'"):
        plan_memory(tmp_path, "train")
