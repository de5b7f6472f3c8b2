"""Few-shot tasks, label manipulations, metrics, head ablation and the `fewshot` CLI.

The hand-built induction model (tests/helpers.py) answers a lookup prompt in the SEP-less format
``x y DELIM ... x`` exactly: its induction head L1H0, at the query x, attends to the token after x's
earlier occurrence (y) and copies it. Lookup inputs and labels are disjoint and the inputs of a prompt
distinct, so that occurrence is unique, and the model's accuracy is 1 for every k >= 1 and every
manipulation that keeps the query's input in context, whatever label the demonstration shows.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import ROLES, assert_close, build_fewshot_hand_model, build_induction_model, fewshot_hand_data

from circuits import derangement
from induction.cli import main
from induction.common.stats import bootstrap_mean_ci
from induction.inputs.stream_configs import FewShotDataConfig, MixtureConfig
from induction.inputs.streams import sample_fewshot_batch
from induction.inputs.task_inference import TaskError
from induction.inputs.tasks import TEXT_TASKS, TextTask, load_text_task
from induction.loading.models import ModelInfo
from induction.loading.native import save_checkpoint
from induction.measures.fewshot import (
    LABEL_VARIANTS,
    ablate_fewshot_heads,
    build_prompts,
    evaluate_fewshot,
    fewshot_metric,
    render,
    sample_episodes,
    score_logits,
    shuffle_demos,
    task_for_model,
)
from induction.measures.fewshot import FewShotPromptConfig as FewShotConfig
from induction.measures.fewshot.render import prompt_stream, render_text
from induction.reports.fewshot import FewShotReport

# The hand-built model's vocabulary is 24 tokens: BOS 0, SEP 22, DELIM 23, content 1..21 split into
# inputs 1..7, labels 8..14 and unrelated 15..21 (enough unrelated labels for k <= 6); a rule over
# 3 inputs, 2 classes of 2 exemplars.
HAND_DATA = fewshot_hand_data()


@pytest.fixture(scope="module")
def hand_model():
    return build_fewshot_hand_model()


@pytest.fixture(scope="module")
def hand_dir(tmp_path_factory, hand_model):
    path = tmp_path_factory.mktemp("fewshot") / "hand"
    save_checkpoint(hand_model, path, {"bos_token_id": 0, "data": HAND_DATA.resolved().to_dict()})
    return path


# ---- the toy layout and the training stream ------------------------------------------------------


def test_toy_layout_reserves_top_ids_and_keeps_spaces_disjoint():
    cfg = FewShotDataConfig()
    v = cfg.vocab
    assert (v.sep, v.delim, v.bos) == (126, 127, 0)
    spaces = [set(v.inputs), set(v.labels), set(v.unrelated)]
    assert all(not (a & b) for i, a in enumerate(spaces) for b in spaces[i + 1 :])
    assert not (set().union(*spaces) & {0, 126, 127})
    assert (len(v.inputs), len(v.labels), len(v.unrelated)) == (54, 54, 16)
    assert sorted(v.rule_labels) == list(v.labels[:20])  # a bijection onto the first 20 labels
    assert set(v.rule_inputs) <= set(v.inputs) and set(v.class_labels) <= set(v.labels)
    exemplars = [x for c in v.class_exemplars for x in c]
    assert len(set(exemplars)) == 32 and not set(exemplars) & set(v.rule_inputs)
    resolved = cfg.resolved().to_dict()
    assert FewShotDataConfig.from_dict(resolved).vocab == v  # what a trained model records rebuilds the layout
    assert FewShotDataConfig(task_seed=1).vocab.rule_labels != v.rule_labels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stream="text"), "stream must be one of"),
        (dict(d_vocab=24, rule_size=9), "do not fit the vocabulary"),
        (dict(bos_token_id=126), "bos_token_id must be in"),
        (dict(n_way=9), "n_way 9 exceeds n_classes"),
        (dict(task_weights=(1.0, 0.0)), "task_weights must be 3"),
        (dict(lookup_keys=(5, 2)), "lookup_keys must be"),
    ],
)
def test_data_config_validation_names_the_problem(kwargs, message):
    with pytest.raises(TaskError, match=message):
        FewShotDataConfig(**kwargs)


@pytest.mark.parametrize("sep", [True, False])
def test_fewshot_stream_format_and_rules(sep):
    cfg = FewShotDataConfig(sep=sep, seq_len=64)
    v, step = cfg.vocab, cfg.demo_len
    tokens = sample_fewshot_batch(cfg, 64, torch.Generator().manual_seed(1))
    again = sample_fewshot_batch(cfg, 64, torch.Generator().manual_seed(1))
    assert tokens.shape == (64, 64) and torch.equal(tokens, again)
    assert (tokens[:, 0] == 0).all()
    body = tokens[:, 1:]
    n = body.shape[1]
    assert (body[:, step - 1 :: step] == v.delim).all()
    if sep:
        assert (body[:, 1::step] == v.sep).all()
    xs, ys = body[:, 0::step], body[:, 1 + sep :: step]
    m = min(xs.shape[1], ys.shape[1])
    xs, ys = xs[:, :m], ys[:, :m]
    rule_rows = [b for b in range(64) if set(xs[b].tolist()) <= set(v.rule_inputs) and set(ys[b].tolist()) <= set(v.rule_labels)]
    assert len(rule_rows) > 5
    for b in rule_rows:
        assert all(v.rule(x) == y for x, y in zip(xs[b].tolist(), ys[b].tolist()))
    # lookup sequences are consistent mappings: an input always gets the label it got first
    consistent = sum(len({(x, y) for x, y in zip(xs[b].tolist(), ys[b].tolist())}) == len(set(xs[b].tolist())) for b in range(64))
    assert consistent == 64
    assert n == 63


def test_mixture_stream_mixes_in_repeated_segments():
    cfg = FewShotDataConfig(stream="mixture", mixture=MixtureConfig(p_repeated=0.5), seq_len=64)
    tokens = sample_fewshot_batch(cfg, 200, torch.Generator().manual_seed(0))
    fewshot_rows = (tokens[:, cfg.demo_len :: cfg.demo_len] == cfg.vocab.delim).all(1)
    assert 60 < int(fewshot_rows.sum()) < 140


# ---- prompts and label manipulations -------------------------------------------------------------


def _prompts(model, **kw):
    return build_prompts(model, FewShotConfig(**{"n_prompts": 50, **kw}))


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_lookup_prompt_invariants(hand_model, k):
    p = _prompts(hand_model, task="lookup", k=k)
    v = HAND_DATA.vocab
    assert p.tokens.shape == (50, 1 + 3 * k + 1)
    assert ((p.tokens == v.delim).sum(1) == k).all()  # exactly k demonstrations
    assert (p.answer_pos == p.tokens.shape[1] - 1).all()
    for b, ep in enumerate(p.episodes):
        xs = [d.x for d in ep.demos]
        assert len(set(xs)) == k and set(xs) <= set(v.inputs)
        if k:
            assert xs.count(ep.query) == 1  # the query's input is shown exactly once
            assert ep.demos[xs.index(ep.query)].y == ep.gold == ep.answer
        assert p.tokens[b, p.answer_pos[b]] == ep.query
        assert p.tokens[b, p.label_pos[b]].tolist() == [d.y for d in ep.demos]
        assert p.tokens[b, p.label_pos[b] - 1].tolist() == xs
    assert p.label_pos.shape == (50, k)


def test_sep_format_positions():
    model = build_induction_model(d_vocab=40, n_ctx=48)
    data = FewShotDataConfig(d_vocab=40, seq_len=48, sep=True)
    model.induction_info = ModelInfo(spec="m", kind="memory", bos_token_id=0, data=data.to_dict())
    p = _prompts(model, task="rule", k=4)
    v = data.vocab
    assert p.tokens.shape[1] == 1 + 4 * 4 + 2
    assert (p.tokens[:, -1] == v.sep).all() and (p.tokens[:, -2] == torch.tensor([e.query for e in p.episodes])).all()
    assert (p.tokens[:, p.label_pos[0] + 1] == v.delim).all() and (p.tokens[:, p.label_pos[0] - 1] == v.sep).all()
    assert all(e.gold == v.rule(e.query) for e in p.episodes)


def test_derangement_is_a_permutation_without_fixed_points():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 54):
        for _ in range(20):
            perm = derangement(n, gen).tolist()
            assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, gen)


@pytest.mark.parametrize("task, k", [("lookup", 4), ("rule", 3), ("classification", 6)])
def test_flipped_and_unrelated_labels(hand_model, task, k):
    t = task_for_model(hand_model, task)
    gold = sample_episodes(t, FewShotConfig(task=task, k=k, n_prompts=40))
    flipped = sample_episodes(t, FewShotConfig(task=task, labels="flipped", k=k, n_prompts=40))
    unrelated = sample_episodes(t, FewShotConfig(task=task, labels="unrelated", k=k, n_prompts=40))
    for g, f, u in zip(gold, flipped, unrelated):
        # every variant manipulates the same gold episode
        assert [(d.x, d.gold) for d in g.demos] == [(d.x, d.gold) for d in f.demos] == [(d.x, d.gold) for d in u.demos]
        assert g.query == f.query == u.query and g.gold == f.gold == u.gold
        for ep in (f, u):
            mapping = {d.gold: d.y for d in ep.demos}
            assert all(mapping[d.gold] == d.y for d in ep.demos)  # one consistent map per prompt
            assert ep.answer == mapping.get(ep.gold, ep.answer) and ep.answer != ep.gold
        assert all(d.y != d.gold and d.y in t.labels for d in f.demos)  # a derangement of the label space
        assert len({d.y for d in u.demos}) == len({d.gold for d in u.demos})  # injective
        assert not {d.y for d in u.demos} & set(t.labels) and u.answer in t.unrelated  # disjoint from gold labels


def test_random_labels_inputs_and_label_space(hand_model):
    t = task_for_model(hand_model, "lookup")
    cfg = dict(task="lookup", k=5, n_prompts=200)
    rand = sample_episodes(t, FewShotConfig(labels="random", **cfg))
    assert all(d.y in t.labels for e in rand for d in e.demos)
    assert all(e.answer == next(d.y for d in e.demos if d.x == e.query) for e in rand)
    agree = np.mean([d.y == d.gold for e in rand for d in e.demos])
    assert abs(agree - 1 / len(t.labels)) < 0.05  # independent of the gold labels
    inputs = sample_episodes(t, FewShotConfig(labels="random_inputs", **cfg))
    assert all(d.x in t.random_inputs and d.y == d.gold for e in inputs for d in e.demos)
    assert all(e.answer == e.gold for e in inputs)
    space = sample_episodes(t, FewShotConfig(labels="random_label_space", **cfg))
    assert all(d.y not in t.labels and d.y in t.unrelated for e in space for d in e.demos)
    assert len({d.y for e in space for d in e.demos}) > 1  # random per demonstration, not a fixed map


def test_shuffle_keeps_the_demonstrations(hand_model):
    t = task_for_model(hand_model, "classification")
    gen = torch.Generator().manual_seed(0)
    for ep in sample_episodes(t, FewShotConfig(task="classification", k=6, n_prompts=20)):
        sh = shuffle_demos(ep, gen)
        assert Counter(sh.demos) == Counter(ep.demos) and (sh.query, sh.gold, sh.answer) == (ep.query, ep.gold, ep.answer)


def test_classification_is_bursty_and_shows_the_query_class(hand_model):
    t = task_for_model(hand_model, "classification")
    v = HAND_DATA.vocab
    for ep in sample_episodes(t, FewShotConfig(task="classification", k=3, n_prompts=50)):
        assert ep.gold in v.class_labels and ep.query in v.class_exemplars[v.class_labels.index(ep.gold)]
        assert ep.gold in [d.gold for d in ep.demos]
        assert len({d.gold for d in ep.demos}) <= HAND_DATA.n_way


def test_fewshot_config_validation():
    for kwargs, message in [(dict(task="sums"), "unknown task 'sums'"), (dict(labels="backwards"), "unknown label variant"),
                            (dict(k=-1), "shots must be >= 0"), (dict(n_prompts=0), "n_prompts must be >= 1")]:
        with pytest.raises(TaskError, match=message):
            FewShotConfig(**kwargs)


# ---- metrics -------------------------------------------------------------------------------------


def test_scores_and_metric_agree_with_an_independent_computation(hand_model):
    p = _prompts(hand_model, task="lookup", labels="random", k=3, n_prompts=40)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40, p.tokens.shape[1], 24, generator=gen)
    for b in range(0, 40, 3):  # make some predictions right
        logits[b, -1, p.answer[b]] += 10.0
    s = score_logits(logits, p)
    correct, correct_gold, logprob = [], [], []
    for b in range(40):
        row = logits[b, int(p.answer_pos[b])].double()
        lp = row - torch.logsumexp(row, 0)
        correct.append(float(int(row.argmax()) == p.episodes[b].answer))
        correct_gold.append(float(int(row.argmax()) == p.episodes[b].gold))
        logprob.append(float(lp[p.episodes[b].answer]))
    assert_close(s.correct, correct, msg="accuracy")
    assert_close(s.correct_gold, correct_gold, msg="gold accuracy")
    assert_close(s.logprob, logprob, atol=1e-5, msg="log-prob")
    metric = fewshot_metric(p)
    assert metric(logits).ndim == 0
    assert_close(metric(logits), np.mean(logprob), atol=1e-5)
    assert_close(fewshot_metric(p, kind="accuracy")(logits), np.mean(correct))
    assert_close(fewshot_metric(p, target="gold", kind="accuracy")(logits), np.mean(correct_gold))
    with pytest.raises(ValueError, match="expected 40"):
        metric(logits[:5])


def test_corrupted_labels_keep_positions_and_hide_the_answer(hand_model):
    from induction.measures.fewshot import corrupt_labels

    p = _prompts(hand_model, task="lookup", k=4, n_prompts=40)
    corrupted = corrupt_labels(p, torch.Generator().manual_seed(0))
    changed = corrupted != p.tokens
    mask = torch.zeros_like(changed)
    mask.scatter_(1, p.label_pos, True)
    assert not (changed & ~mask).any()  # only demonstration labels change
    assert (corrupted.gather(1, p.label_pos) != p.answer[:, None]).all()
    with torch.no_grad():
        clean, bad = fewshot_metric(p)(hand_model(p.tokens)), fewshot_metric(p)(hand_model(corrupted))
    assert clean > -0.5 and bad < clean - 3  # the hand-built model can no longer find the answer


def test_bootstrap_ci_brackets_the_mean():
    x = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_mean_ci(x, 2000, seed=0)
    se = math.sqrt(0.3 * 0.7 / 100)
    assert lo < 0.3 < hi and abs((hi - lo) - 2 * 1.96 * se) < 0.04
    assert bootstrap_mean_ci(x, 0) is None


# ---- the hand-built model: known accuracies ------------------------------------------------------


def test_handbuilt_model_follows_in_context_labels(hand_model):
    results = evaluate_fewshot(hand_model, "lookup", LABEL_VARIANTS, shots=(0, 1, 4, 6), n_prompts=60, n_bootstrap=200)
    by = {(r.labels, r.k): r for r in results}
    for variant in ("gold", "random", "flipped", "unrelated", "random_label_space", "shuffled"):
        for k in (1, 4, 6):
            assert by[variant, k].accuracy == 1.0, (variant, k)  # induction retrieves the shown label
    for k in (1, 4, 6):
        assert by["flipped", k].accuracy_gold == 0.0 and by["unrelated", k].accuracy_gold == 0.0
        assert by["gold", k].accuracy_ci == (1.0, 1.0)
        # the query's input is replaced, so nothing in context predicts its label
        assert by["random_inputs", k].accuracy < 0.4
    # random labels: gold accuracy = how often the shown label happens to be the gold one
    p = _prompts(hand_model, task="lookup", labels="random", k=4, n_prompts=60)
    expected = np.mean([e.answer == e.gold for e in p.episodes])
    assert_close(by["random", 4].accuracy_gold, expected)
    assert by["gold", 0].accuracy < 0.2  # k = 0: nothing to copy
    assert by["gold", 4].mean_logprob > by["gold", 0].mean_logprob + 2


def test_shuffled_orders_are_scored_against_an_independent_loop(hand_model):
    """With random inputs the query's label can only come from the fixed-offset head L0H2, which copies
    the token 5 positions back (the second-last demonstration's label): so the order matters."""
    from induction.measures.fewshot import evaluate_shots

    cfg = FewShotConfig(task="lookup", labels="random_inputs", k=5, n_prompts=60)
    res, _, mean = evaluate_shots(hand_model, cfg, n_orders=4, n_bootstrap=0)
    task = task_for_model(hand_model, "lookup")
    episodes = sample_episodes(task, cfg)
    gen = prompt_stream(cfg.seed, cfg.k, 4)
    orders = [episodes] + [[shuffle_demos(ep, gen) for ep in episodes] for _ in range(3)]
    correct = []
    for eps in orders:
        p = render(hand_model, task, eps, cfg)
        with torch.no_grad():
            logits = hand_model(p.tokens)
        correct.append((logits[torch.arange(len(p)), p.answer_pos].argmax(-1) == p.answer).float())
    assert res.accuracy_by_order == pytest.approx([float(c.mean()) for c in correct])
    assert len(set(res.accuracy_by_order)) > 1  # the order changes the answers
    assert res.accuracy == pytest.approx(float(torch.stack(correct).mean())) and res.accuracy_ci is None
    assert_close(mean.correct, torch.stack(correct).mean(0))


def test_ablating_the_induction_head_removes_lookup_accuracy(hand_model):
    result = ablate_fewshot_heads(hand_model, FewShotConfig(task="lookup", k=4, n_prompts=40), n_heads=1, n_draws=3,
                                  n_bootstrap=200)
    a, d = result.ablation, result.to_dict()
    assert a.target.heads == [ROLES.induction] and result.prefix_matching[0] > 0.9
    assert d["baseline"]["accuracy"] == 1.0 and d["top"]["accuracy"] == 0.0
    assert {tuple(r.heads[0]) for r in a.random} <= {(1, 1), (1, 2), (1, 3)}  # layer-matched, not the top head
    assert d["random_accuracy"] == 1.0 and d["drop_difference"] == 1.0 and d["drop_difference_ci"] == [1.0, 1.0]
    assert d["n_distinct_random_sets"] == len({tuple(r.heads) for r in a.random}) <= 3
    # the per-prompt values agree with the metric's own value on the same ablated run
    from circuits import ablate_head_set

    p = build_prompts(hand_model, result.config)
    assert_close(ablate_head_set(hand_model, p.tokens, fewshot_metric(p), [ROLES.induction]), d["top"]["mean_logprob"],
                 atol=1e-5)


# ---- text tasks ----------------------------------------------------------------------------------


def test_shipped_text_datasets():
    for name in TEXT_TASKS:
        task = load_text_task(name)
        assert 30 <= len(task.pairs) <= 60 and len({x for x, _ in task.pairs}) == len(task.pairs)
        assert not set(task.unrelated) & set(task.labels) and len(task.unrelated) >= 30
        assert not set(task.random_inputs) & {x for x, _ in task.pairs}
    assert load_text_task("word_category").labels == ("animal", "color", "country", "fruit", "sport", "tool")
    with pytest.raises(TaskError, match="unknown text task"):
        load_text_task("sums")


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    special = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=special, eos_token=special, unk_token=special), vocab


def test_text_prompts_render_and_score_the_first_answer_token():
    task = load_text_task("word_category")
    words = sorted({w for pair in task.pairs for w in pair} | set(task.unrelated) | set(task.random_inputs) | {"->"})
    tok, vocab = _word_tokenizer(words)
    cfg = FewShotConfig(task="word_category", labels="flipped", k=3, n_prompts=20)
    episodes = sample_episodes(task, cfg)
    p = render_text(episodes, task, tok, 0, cfg)
    for b, ep in enumerate(episodes):
        n = 1 + 3 * 3 + 2  # BOS, "x -> y" x 3 (the newline is not a token here), "x ->"
        assert p.answer_pos[b] == n - 1 and p.tokens[b, 0] == 0
        assert p.tokens[b, p.answer_pos[b]] == vocab["->"] and p.tokens[b, p.answer_pos[b] - 1] == vocab[ep.query]
        assert p.answer[b] == vocab[ep.answer] and p.gold[b] == vocab[ep.gold]
        assert p.tokens[b, p.label_pos[b]].tolist() == [vocab[d.y] for d in ep.demos]
        assert ep.query not in [d.x for d in ep.demos]  # the query pair is held out
    custom = TextTask(name="pairs", pairs=(("a", "b"), ("c", "d"), ("e", "f")), separator=":", delimiter=";")
    ep = sample_episodes(custom, FewShotConfig(task="antonyms", k=2, n_prompts=1))[0]
    from induction.measures.fewshot import text_prompt

    text, offsets = text_prompt(ep, custom)
    assert text.count(";") == 2 and text.endswith(f"{ep.query}:") and [text[o] for o in offsets] == [d.y for d in ep.demos]


def test_text_task_on_a_tiny_hf_model(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from induction.loading.models import load_model

    task = load_text_task("antonyms")
    words = sorted({w for pair in task.pairs for w in pair} | set(task.unrelated) | set(task.random_inputs) | {"->"})
    tok, _ = _word_tokenizer(words)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=len(words) + 1, n_positions=64,
                               bos_token_id=0, eos_token_id=0)).eval().save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    model = load_model(tmp_path / "gpt2")
    res = evaluate_fewshot(model, "antonyms", ["gold", "unrelated"], shots=(0, 2), n_prompts=8, n_bootstrap=0)
    assert len(res) == 4 and all(0.0 <= r.accuracy <= 1.0 and r.mean_logprob < 0 for r in res)
    with pytest.raises(TaskError, match="beyond the model's context"):
        evaluate_fewshot(model, "antonyms", ["gold"], shots=(30,), n_prompts=2)


def test_text_task_needs_a_tokenizer(hand_model):
    with pytest.raises(TaskError, match="text task and this model has no tokenizer"):
        evaluate_fewshot(hand_model, "antonyms", ["gold"], shots=(1,))


# ---- the CLI -------------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_follows_the_contract(hand_dir, tmp_path, capsys):
    out = tmp_path / "fs.json"
    code, _, err = run_cli(capsys, "fewshot", hand_dir, "--task", "lookup", "--labels", "gold", "--shots", "0,1,4",
                           "--prompts", "30", "--format", "json", "--out", out, "-q")
    assert code == 0, err
    report = json.loads(out.read_text())
    assert set(report) == {"model", "task", "labels", "shots", "provenance"}
    assert report["task"] == "lookup" and report["labels"] == "gold"
    assert [s["k"] for s in report["shots"]] == [0, 1, 4]
    for s in report["shots"]:
        assert {"k", "accuracy", "accuracy_ci", "mean_logprob", "accuracy_gold"} <= set(s)
    assert [s["accuracy"] for s in report["shots"]][1:] == [1.0, 1.0]
    prov = report["provenance"]
    assert prov["seed"] == 0 and prov["settings"]["n_prompts"] == 30 and prov["settings"]["toy_layout"]["sep"] is False


def test_cli_label_list_plot_and_ablation(hand_dir, tmp_path, capsys):
    plot = tmp_path / "fs.html"
    code, out, err = run_cli(capsys, "fewshot", hand_dir, "--labels", "gold,flipped,random", "--shots", "1,2",
                             "--prompts", "20", "--format", "json", "--plot", plot, "--ablate", "1", "--ablate-draws", "2",
                             "--bootstrap", "100", "-q")
    assert code == 0, err
    report = json.loads(out)
    assert report["labels"] == ["gold", "flipped", "random"]
    assert [(s["labels"], s["k"]) for s in report["shots"]] == [(v, k) for v in ("gold", "flipped", "random") for k in (1, 2)]
    flipped = [s for s in report["shots"] if s["labels"] == "flipped"]
    assert all(s["accuracy"] == 1.0 and s["accuracy_gold"] == 0.0 for s in flipped)
    assert report["ablation"]["top_heads"] == [list(ROLES.induction)] and report["ablation"]["top"]["accuracy"] == 0.0
    html = plot.read_text()
    assert "flipped labels" in html and "random labels" in html
    code, out, err = run_cli(capsys, "fewshot", hand_dir, "--shots", "1,2", "--prompts", "10", "--format", "csv", "-q")
    assert code == 0 and out.splitlines()[0].startswith("labels,k,accuracy,ci_low,ci_high")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "sums"], "unknown task 'sums'"),
        (["--labels", "gold,backwards"], "unknown label variant 'backwards'"),
        (["--task", "antonyms"], "no tokenizer"),
        (["--task", "classification", "--shots", "20"], "beyond the model's context of 48"),
        (["--task", "lookup", "--shots", "1,12"], "holds at most 7 demonstrations"),
        (["--shots", "1,x"], "comma-separated integers"),
        (["--prompts", "0"], "--prompts must be >= 1"),
        (["--plot-kind", "ablation", "--plot", "{tmp}/a.html"], "needs --ablate"),
    ],
)
def test_cli_bad_input_one_line(hand_dir, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run_cli(capsys, "fewshot", hand_dir, *argv, "-q")
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]


def test_report_objects_are_the_single_source(hand_model):
    from induction.jobs import FewShotConfig as JobConfig
    from induction.jobs import fewshot

    rep = fewshot(hand_model, JobConfig(labels=("gold", "flipped"), shots=(1, 2), n_prompts=10, n_bootstrap=0))
    assert isinstance(rep, FewShotReport)
    df = rep.to_dataframe()
    assert list(df["accuracy"]) == [s["accuracy"] for s in rep.to_json()["shots"]]
    fig = rep.plot()
    assert len(fig.data) == 3  # gold; flipped vs in-context and vs gold


# ---- training on the few-shot stream ----------------------------------------------------------------


def test_train_records_the_fewshot_stream_and_prompts_use_it(tmp_path):
    from induction.inputs.streams import training_data
    from induction.loading.models import load_model
    from induction.training.config import TrainConfig
    from induction.training.train import train

    data = training_data("mixture", d_vocab=40, seq_len=32)
    cfg = TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=32, d_vocab=40, steps=2, batch_size=4,
                      n_log_checkpoints=0, checkpoint_every=0, data=data)
    assert TrainConfig.from_dict(cfg.to_dict()).data == data  # the run's config round-trips
    run = train(cfg, tmp_path / "run", progress=False)
    model = load_model(run)
    assert FewShotDataConfig.from_dict(model.induction_info.data) == data and model.induction_info.bos_token_id == 0
    p = build_prompts(model, task="rule", k=3, n_prompts=4)
    assert all(e.gold == data.vocab.rule(e.query) for e in p.episodes)
    assert (p.tokens.max() < 40) and (p.tokens[:, 3] == data.vocab.delim).all()
    with pytest.raises(TaskError, match="unknown training data"):
        training_data("text", 40, 32)


def test_train_cli_data_option(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", "fewshot", "--layers", "1", "--d-model", "16", "--heads", "2",
                             "--ctx", "32", "--vocab", "40", "--steps", "2", "--log-checkpoints", "0",
                             "--checkpoint-every", "0", "--out", run, "--format", "json", "-q")
    assert code == 0, err
    data = json.loads(out)["data"]
    assert data["stream"] == "fewshot" and data["d_vocab"] == 40 and data["seq_len"] == 32
    code, _, err = run_cli(capsys, "fewshot", run, "--task", "rule", "--shots", "0,2", "--prompts", "5", "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--data", "mixture", "--resume", "--out", run, "-q")
    assert code != 0 and "different data" in err


# ---- slow: the default toy model trained on the few-shot stream ----------------------------------------


@pytest.fixture(scope="module")
def trained_fewshot_model(tmp_path_factory):
    """`induction train --data fewshot` with every other default (the 2-layer model, 1000 steps), from the
    default models' seed (`pytest --toy-seed N` trains it from seed N, as it does `default_run("fewshot")`)."""
    from induction.loading.models import load_model
    from induction.training.defaults import default_seed

    run = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", "--data", "fewshot", "--seed", str(default_seed()), "--out", str(run), "-q"]) == 0
    return load_model(run)


# Over toy seeds 0-4 (pytest -m slow --toy-seed N) these two tests pass at seeds 0, 2 and 4 (lookup accuracy at
# k = 1..8: 0.96-1.00, 0.95-0.98, 0.88-0.92; top-2 ablation drop over random heads, CI low end 0.145-0.71)
# and FAIL at seeds 1 and 3, where the recipe's 1000 steps end before lookup forms (accuracy 0.21-0.48 at
# k >= 1; seed 1's loss is still on its plateau at 1.85). That is the recipe, not these bounds: trained to 2000
# steps, seeds 1 and 3 learn lookup by step 1250 (accuracy 0.94-1.00 at k = 1, 8; 0.88-1.00 after, 0.965-1.00
# at step 2000). But a 2000-step recipe is no fix either: at seed 0 it made the ablation test fail instead (the
# top-2 prefix-matching heads then matter less than layer-matched random pairs: drop-difference CI low end -0.325),
# so the recipe stays at 1000 steps and these two slow tests are known to hold at seeds 0, 2 and 4 only.
@pytest.mark.slow
def test_trained_model_learns_the_tasks_in_context(trained_fewshot_model):
    res = evaluate_fewshot(trained_fewshot_model, "lookup", ["gold", "flipped"], shots=(0, 1, 4, 8), n_prompts=200)
    by = {(r.labels, r.k): r for r in res}
    assert by["gold", 0].accuracy < 0.1  # a fresh mapping: nothing to go on without demonstrations
    for k in (1, 4, 8):
        assert by["gold", k].accuracy > 0.8 and by["gold", k].accuracy_ci[0] > by["gold", 0].accuracy_ci[1]
        assert by["flipped", k].accuracy > 0.8 and by["flipped", k].accuracy_gold < 0.05  # follows the labels shown
    rule = {r.k: r for r in evaluate_fewshot(trained_fewshot_model, "rule", ["gold"], shots=(0, 4), n_prompts=100)}
    assert rule[0].accuracy > 0.8  # the rule is in the weights


@pytest.mark.slow
def test_trained_model_induction_heads_carry_lookup(trained_fewshot_model):
    a = ablate_fewshot_heads(trained_fewshot_model, FewShotConfig(task="lookup", k=8, n_prompts=200), n_heads=2,
                             n_draws=10).to_dict()
    assert a["baseline"]["accuracy"] > 0.8
    assert a["drop_difference_ci"][0] > 0.1  # the top heads matter more than layer-matched random heads
