"""Every job on every common architecture: GPT-2, GPT-NeoX, Llama and GPT-Neo directories (tests/hf_models.py).

Through the CLI, in-process: `scan --text` (the ICL score against one computed by the Hugging Face
model itself), `track --revisions`, `ablate` (every method against plain hooked runs, or a
one-line refusal) and `patch` (TransformerLens' numbers; attribution against finite differences).
Loading: a local directory named like a TransformerLens alias loads that directory; a directory
without tokenizer files takes its BOS from config.json; a text task whose words the tokenizer
does not know is a one-line error.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from hf_models import DATASETS, ENGLISH_TEXT, FAMILIES, build_hf_model, tokenizer_vocab
from test_circuits_families import naive_ablation
from test_cli import run_cli
from transformer_lens import patching as tl_patching

from circuits.hooks import pattern_name, z_name
from induction.loading.models import load_model

SCORES = ("prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token")
METRIC = ("--metric", "icl", "--sequences", "4", "--seq-len", "32")


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def cli_json(capsys, *argv):
    code, out, err = run_cli(capsys, *argv, "--format", "json", "-q")
    assert code == 0, err
    return json.loads(out)


def one_line_error(capsys, *argv) -> str:
    code, out, err = run_cli(capsys, *argv, "-q")
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- loading ---------------------------------------------------------------------------------------


def test_a_local_directory_named_like_an_alias_loads_that_directory(hf_dirs, tmp_path, monkeypatch, capsys):
    """`neox`, `neo` and `pythia` are TransformerLens aliases of hub models; offline, resolving them
    would fail, and online it would load another model. A relative, absolute or ./ path loads the
    directory, and the bridge computes what the directory's own weights compute."""
    from transformers import AutoModelForCausalLM

    for name, family in (("neox", "neox"), ("neo", "neo"), ("pythia", "neox"), ("gpt2", "gpt2")):
        shutil.copytree(hf_dirs[family], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    tokens = torch.randint(3, 100, (2, 20), generator=torch.Generator().manual_seed(0))
    for name, family in (("neox", "neox"), ("neo", "neo"), ("pythia", "neox"), ("gpt2", "gpt2")):
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / name, attn_implementation="eager").eval()
        for spec in (name, f"./{name}", str(tmp_path / name)) if name == "neox" else (name,):
            model = load_model(spec)
            assert model.cfg.model_name == str(tmp_path / name) and model.induction_info.spec == spec
            with torch.no_grad():
                torch.testing.assert_close(model(tokens), hf(tokens).logits, atol=1e-4, rtol=0)
    report = cli_json(capsys, "scan", "neox", "--no-icl", "--prompts", "4", "--bootstrap", "0")
    assert report["model"] == "neox" and len(report["heads"]) == 8


def test_a_directory_without_tokenizer_files_takes_bos_from_its_config(tmp_path, capsys):
    """TransformerLens substitutes an empty tokenizer whose BOS is id 0; the model's is config.json's."""
    build_hf_model("gpt2", tmp_path / "m", tokenizer=False)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config.update(bos_token_id=7, eos_token_id=7)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    model = load_model(tmp_path / "m")
    assert model.induction_info.bos_token_id == 7 and model.tokenizer is None
    (tmp_path / "t.txt").write_text(ENGLISH_TEXT)
    assert "no tokenizer" in one_line_error(capsys, "scan", tmp_path / "m", "--text", tmp_path / "t.txt")


# ---- scan and track --------------------------------------------------------------------------------


def test_scan_with_text_on_every_family(hf_dirs, tmp_path, family, capsys):
    """Finite head scores, and the ICL score on the text's windows equals the one computed from the
    Hugging Face model's own logits (late-token minus early-token loss, BOS first)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = tmp_path / "story.txt"
    text.write_text(ENGLISH_TEXT * 3)
    report = cli_json(capsys, "scan", hf_dirs[family], "--text", text, "--prompts", "8", "--bootstrap", "0",
                      "--icl-sequences", "6")
    assert len(report["heads"]) == 8
    assert all(math.isfinite(h[k]) for h in report["heads"] for k in SCORES)
    assert "text file story.txt (6 windows)" in report["icl"]["data"]

    hf = AutoModelForCausalLM.from_pretrained(hf_dirs[family], attn_implementation="eager").eval()
    ids = AutoTokenizer.from_pretrained(hf_dirs[family])(ENGLISH_TEXT * 3, add_special_tokens=False)["input_ids"]
    assert 1 not in ids  # no unknown words in the text
    seq_len = 128  # the models' context
    windows = torch.tensor(ids[: 6 * (seq_len - 1)]).view(6, seq_len - 1)
    windows = torch.cat([torch.zeros(6, 1, dtype=torch.long), windows], dim=1)  # BOS = 0
    with torch.no_grad():
        logprobs = hf(windows).logits.log_softmax(-1)
    loss = lambda t: -logprobs[:, t - 1].gather(-1, windows[:, t, None])[:, 0]  # noqa: E731
    early, late = round(seq_len * 50 / 512), round(seq_len * 500 / 512)
    assert report["icl_score"] == pytest.approx(float((loss(late) - loss(early)).mean()), abs=1e-4)


def test_track_revisions_on_every_family(hf_dirs, tmp_path, family, monkeypatch, capsys):
    """Each revision of a hub model (served on 127.0.0.1 by `tests/hub_server.py`, downloaded the
    real way) is scored in turn: its heads are what `scan` gives the directory it was made from."""
    from hub_server import LocalHub
    from huggingface_hub import constants

    revisions = {"step0": hf_dirs[family], "step100": tmp_path / "step100"}
    build_hf_model(family, revisions["step100"], seed=1)
    hub = LocalHub()
    for name, folder in revisions.items():
        hub.add("org/model", name, folder)
    hub.start()
    try:
        for key, value in {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
                           "HF_HUB_DISABLE_TELEMETRY": "1", "DISABLE_SAFETENSORS_CONVERSION": "1",
                           "INDUCTION_CACHE": str(tmp_path / "induction")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        small = ("--prompts", "8", "--bootstrap", "0", "--icl-sequences", "4", "--held-out-sequences", "4")
        report = cli_json(capsys, "track", "org/model", "--revisions", "step100,step0", "--no-cache", *small)
    finally:
        hub.stop()
    assert [c["step"] for c in report["checkpoints"]] == [100, 0]
    assert [c["revision"] for c in report["checkpoints"]] == ["step100", "step0"]
    scanned = cli_json(capsys, "scan", revisions["step100"], "--prompts", "8", "--bootstrap", "0", "--no-icl")
    by_head = {(h["layer"], h["head"]): h for h in scanned["heads"]}
    for head in report["checkpoints"][0]["heads"]:
        for key in SCORES:
            assert head[key] == pytest.approx(by_head[head["layer"], head["head"]][key], abs=1e-6)
    assert report["checkpoints"][0]["heads"] != report["checkpoints"][1]["heads"]  # each revision its own
    assert all(math.isfinite(c["icl_score"]) and math.isfinite(c["held_out_loss"]) for c in report["checkpoints"])


# ---- ablate and patch ------------------------------------------------------------------------------


def metric_setup(model):
    """The run `--metric icl --sequences 4 --seq-len 32 --seed 0` measures on."""
    from induction.measures.metrics import stream_metric_setup

    return stream_metric_setup(model, "icl", n_sequences=4, seed=0, seq_len=32)


def values_of(report) -> torch.Tensor:
    values = torch.empty(2, 4)
    for h in report["heads"]:
        values[h["layer"], h["head"]] = h["value"]
        assert h["effect"] == pytest.approx(h["value"] - report["baseline"])
    return values


def test_ablate_on_every_family(hf_dirs, hf_bridges, family, capsys):
    """zero and pattern ablation through the CLI equal plain hooked forwards; GPT-Neo, whose
    attention ignores pattern edits, refuses pattern ablation in one line. (mean and resample run
    the same engine with other sources: tests/test_circuits_families.py checks them on every family.)"""
    model = hf_bridges[family]
    setup = metric_setup(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(setup.tokens)
    frozen = {l: cache[pattern_name(l)] for l in range(2)}
    for method in ("zero", "pattern"):
        if method == "pattern" and family == "neo":
            message = one_line_error(capsys, "ablate", hf_dirs[family], "--method", "pattern", *METRIC)
            assert "hook_pattern" in message and "pattern" in message
            continue
        report = cli_json(capsys, "ablate", hf_dirs[family], "--method", method, *METRIC)
        zero = lambda layer: torch.zeros(1, 1, 1, 1)  # noqa: E731
        expected = naive_ablation(model, setup.tokens, setup.metric, zero, frozen if method == "pattern" else None)
        torch.testing.assert_close(values_of(report), expected, atol=1e-4, rtol=0)
        with torch.no_grad():
            assert report["baseline"] == pytest.approx(float(setup.metric(model(setup.tokens))), abs=1e-5)


def test_patch_exact_and_attribution_on_every_family(hf_dirs, hf_bridges, family, capsys):
    """exact: TransformerLens' get_act_patch_attn_head_out_all_pos on the job's clean and corrupted
    runs; attribution: the derivative along each head's patch, by central differences."""
    model = hf_bridges[family]
    setup = metric_setup(model)
    exact = cli_json(capsys, "patch", hf_dirs[family], "--method", "exact", *METRIC)
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(setup.tokens)
        _, corrupted_cache = model.run_with_cache(setup.corrupted)
    expected = tl_patching.get_act_patch_attn_head_out_all_pos(model, setup.corrupted, clean_cache, setup.metric)
    torch.testing.assert_close(values_of(exact), expected, atol=1e-4, rtol=0)
    with torch.no_grad():
        assert exact["clean"] == pytest.approx(float(setup.metric(model(setup.tokens))), abs=1e-5)

    attribution = cli_json(capsys, "patch", hf_dirs[family], "--method", "attribution", *METRIC)
    eps = 3e-3

    def moved(t: float):
        return lambda layer: corrupted_cache[z_name(layer)] + t * (clean_cache[z_name(layer)] - corrupted_cache[z_name(layer)])

    derivative = (naive_ablation(model, setup.corrupted, setup.metric, moved(eps))
                  - naive_ablation(model, setup.corrupted, setup.metric, moved(-eps))) / (2 * eps)
    effects = values_of(attribution) - attribution["baseline"]
    torch.testing.assert_close(effects, derivative, atol=2e-3 * float(derivative.abs().max()), rtol=0)


# ---- few-shot text tasks -------------------------------------------------------------------------


def test_text_task_words_the_tokenizer_does_not_know_are_a_one_line_error(tmp_path, capsys):
    """With a word-level tokenizer that lacks the task's words every answer would be the unknown
    token and accuracy a meaningless 0.00 at every k; the CLI names the task and the words instead."""
    build_hf_model("gpt2", tmp_path / "m", task_words=False)
    known = tokenizer_vocab(task_words=False)
    pairs = json.loads((DATASETS / "antonyms.json").read_text())
    unknown = [w for w in dict.fromkeys(w for pair in pairs["pairs"] for w in pair) if w not in known]
    message = one_line_error(capsys, "fewshot", tmp_path / "m", "--task", "antonyms", "--shots", "0,1")
    assert "'antonyms'" in message and f"does not know {len(unknown)} of its words" in message
    assert repr(unknown[0]) in message and "unknown token '<unk>'" in message


def test_text_task_answers_are_the_words_own_tokens(hf_bridges):
    """With the full tokenizer the answers are each word's own token, never the unknown token."""
    from induction.measures.fewshot.render import build_prompts

    vocab = tokenizer_vocab()
    prompts = build_prompts(hf_bridges["llama"], task="country_capital", k=2, n_prompts=16)
    assert prompts.answer.tolist() == [vocab[str(ep.answer).split()[0]] for ep in prompts.episodes]
    assert 1 not in prompts.tokens.tolist() and (prompts.tokens[:, 0] == 0).all()
