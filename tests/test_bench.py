"""`induction bench`: the hand-built suite's truth, the scoring rules, and every method's numbers against
what the models' construction says they must be."""

from __future__ import annotations

import json
import time

import pytest
import torch
from helpers import assert_close, build_induction_model

from induction.bench.handbuilt import HandBuiltSpec, build_handbuilt
from induction.bench.handbuilt import HeadRole as R
from induction.bench.suite import SUITE, Truth, name_by_fraction, pessimistic_ranks, score_method
from induction.cli import main
from induction.jobs import BenchConfig, bench
from induction.measures.metrics import stream_metric_setup

SMALL = ("attn-v20-h8", "lnmlp-v20-h8")


def role_heads(spec: HandBuiltSpec, role: str, **attrs) -> list[tuple[int, int]]:
    return [(layer, h) for layer, heads in enumerate(spec.layers) for h, r in enumerate(heads)
            if r.role == role and all(getattr(r, k) == v for k, v in attrs.items())]


def test_truth_follows_the_construction():
    spec = SUITE["attn-v20-h8"]()
    truth = Truth.of(spec)
    (shifted,) = role_heads(spec, "shifted_induction")
    r = spec.layers[shifted[0]][shifted[1]]
    expected = {*role_heads(spec, "induction"), shifted, *role_heads(spec, "previous_token"),
                *role_heads(spec, "offset", lag=r.key_lag), *role_heads(spec, "offset", lag=r.value_lag)}
    assert set(truth.circuit) == expected and len(truth.circuit) == 5
    assert truth.induction == role_heads(spec, "induction") and truth.shifted_induction == [shifted]
    assert len(Truth.of(SUITE["lnmlp-v32-h10"]()).induction) == 2  # the redundant pair
    # The anti-induction head reads the previous-token head too, but opposes ICL: not in the circuit.
    helper = Truth.of(HandBuiltSpec(layers=((R("previous_token"), R("inert")),
                                            (R("induction"), R("anti_induction", weight=-1.0)))))
    assert helper.circuit == [(0, 0), (1, 0)] and helper.shifted_induction == []
    with pytest.raises(ValueError, match=r"L1H0 \(shifted_induction \(d=3\)\) reads lag 2, which no offset head"):
        HandBuiltSpec(layers=((R("previous_token"),), (R("shifted_induction", query_lag=0, key_lag=3),)))


def test_layernorm_models_stay_near_their_calibrated_scale():
    """The LayerNorm variant's premise: every norm's scale stays within 10% of the weight that undoes it."""
    model = build_handbuilt(SUITE["lnmlp-v20-h8"](), name="<ln model>")
    assert model.induction_info.spec == "<ln model>"  # reports name the model, not its last norm
    setup = stream_metric_setup(model, "icl", n_sequences=8, seed=5)
    names = [f"blocks.{layer}.{ln}" for layer in range(2) for ln in ("ln1", "ln2")] + ["ln_final"]
    _, cache = model.run_with_cache(setup.tokens, names_filter=lambda n: n.endswith("hook_scale"))
    state = model.state_dict()
    for name in names:
        scale, weight = cache[f"{name}.hook_scale"], state[f"{name}.weight"][0]
        assert float((scale / weight - 1).abs().max()) < 0.1, name


def test_scoring_rules_on_a_hand_made_example():
    scores = torch.tensor([[3.0, 1.0], [1.0, 0.0]])
    assert pessimistic_ranks(scores).tolist() == [[1, 3], [3, 4]]  # ties rank against the method
    named = torch.tensor([[True, True], [False, False]])
    s = score_method("m", "circuit", [(0, 1), (1, 0)], scores, named)
    assert (s.precision, s.recall, s.true_head_rank, s.true_head_ranks) == (0.5, 0.5, 3, [3, 3])
    none = score_method("m", "circuit", [], scores, torch.zeros(2, 2, dtype=torch.bool))
    assert (none.precision, none.recall, none.true_head_rank) == (None, None, None)
    unscored = score_method("m", "circuit", [(1, 1)], torch.tensor([[1.0, float("-inf")], [float("nan"), 0.0]]), named)
    assert unscored.true_head_rank == 2 and unscored.to_dict()["scores"] == [[1.0, None], [None, 0.0]]
    json.dumps(unscored.to_dict(), allow_nan=False)  # valid JSON: no NaN or Infinity
    support = torch.tensor([[1.0, 0.5], [0.05, -2.0]])
    assert name_by_fraction(support, 0.1).tolist() == [[True, True], [False, False]]
    assert not name_by_fraction(-support.abs(), 0.1).any()  # nothing supports ICL: nothing is named


@pytest.fixture(scope="module")
def report():
    return bench(BenchConfig(models=SMALL, device="cpu"))


def method(report, model: str, name: str):
    return next(m for m in report.models if m.name == model).method(name)


@pytest.mark.parametrize("model", SMALL)
def test_detectors_flag_exactly_the_true_heads(report, model):
    truth = next(m for m in report.models if m.name == model).truth
    for name, true in (("is_induction", truth.induction), ("is_shifted_induction", truth.shifted_induction)):
        s = method(report, model, name)
        assert s.named == true and (s.precision, s.recall, s.true_head_rank) == (1.0, 1.0, 1), name


@pytest.mark.parametrize("model", SMALL)
def test_causal_methods_find_what_their_intervention_can_see(report, model):
    spec = SUITE[model]()
    truth = Truth.of(spec)
    (shifted,) = role_heads(spec, "shifted_induction")
    r = spec.layers[shifted[0]][shifted[1]]
    (prev,) = role_heads(spec, "previous_token")
    (key,) = role_heads(spec, "offset", lag=r.key_lag)
    (value,) = role_heads(spec, "offset", lag=r.value_lag)
    layer1 = {*truth.induction, shifted}
    # Ablations that remove a head's output everywhere break every path: they name the whole circuit.
    for name in ("zero ablation", "mean ablation", "resample ablation"):
        s = method(report, model, name)
        assert set(s.named) == set(truth.circuit) and s.true_head_rank == len(truth.circuit), name
    # Pattern-preserving ablation freezes the attention, so the heads that only feed queries and keys
    # (previous-token head, key offset head) lose their effect; the value path remains.
    s = method(report, model, "pattern ablation")
    assert set(s.named) == layer1 | {value}
    assert abs(float(s.scores[prev])) < 0.05 and abs(float(s.scores[key])) < 0.05
    # Patching one head's clean output into a run without repeats restores ICL only where that head
    # alone suffices: the layer-1 heads, not the previous-token or offset heads they need.
    exact = method(report, model, "exact patching")
    assert set(exact.named) == layer1 and exact.precision == 1.0 and exact.recall == pytest.approx(2 / 5)
    assert set(method(report, model, "attribution patching").named) >= layer1
    # Attribution reads ~0 for the previous-token head behind the induction heads' saturated softmax;
    # AtP* recomputes that softmax and names it.
    attribution, star = method(report, model, "attribution patching"), method(report, model, "atp-star patching")
    assert abs(float(attribution.scores[prev])) < 0.01 and prev not in attribution.named
    assert prev in star.named and float(star.scores[prev]) > 0.5
    assert star.recall > attribution.recall and star.recall >= 0.8
    assert exact.spearman_vs_exact == pytest.approx(1.0) and star.runtime_s > 0
    control = method(report, model, "random")
    assert control.precision < 0.5


def test_zero_ablation_numbers_match_a_hooked_forward(report):
    """The support of the previous-token head is its hooked run's ICL score minus the unablated one."""
    spec = SUITE["attn-v20-h8"]()
    model = build_handbuilt(spec, name="<hand-built attn-v20-h8>")
    cfg = BenchConfig(models=SMALL)
    setup = stream_metric_setup(model, cfg.metric, n_sequences=cfg.sequences, seed=cfg.seed)
    (prev,) = role_heads(spec, "previous_token")

    def zero(z, hook):
        z = z.clone()
        z[:, :, prev[1]] = 0.0
        return z

    with torch.no_grad():
        unablated = float(setup.metric(model(setup.tokens)))
        ablated = float(setup.metric(model.run_with_hooks(setup.tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero)])))
    bench_model = next(m for m in report.models if m.name == "attn-v20-h8")
    assert_close(bench_model.baseline, unablated, atol=1e-5)
    assert_close(float(bench_model.method("zero ablation").scores[prev]), ablated - unablated, atol=1e-4)
    assert ablated - unablated > 1.0  # without it neither kind of induction head finds its key


def test_report_json_follows_the_contract_and_the_figure_reads_it(report, tmp_path):
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) >= {"models", "provenance"} and [m["name"] for m in data["models"]] == list(SMALL)
    for m in data["models"]:
        assert set(m) >= {"name", "truth", "methods"}
        assert set(m["truth"]) >= {"induction", "shifted_induction", "circuit", "roles"}
        assert [s["method"] for s in m["methods"]] == [s.method for s in report.models[0].methods]
        for s in m["methods"]:
            assert set(s) >= {"method", "precision", "recall", "true_head_rank"}
    assert data["provenance"]["settings"]["models"] == list(SMALL) and data["provenance"]["runtime_s"] > 0
    fig = report.plot()
    recall, precision = fig.data
    assert list(recall.x) == list(SMALL) and list(recall.y) == [s.method for s in report.models[0].methods]
    expected = [[method(report, name, s.method).recall for name in SMALL] for s in report.models[0].methods]
    assert [list(row) for row in recall.z] == expected
    df = report.to_dataframe()
    assert list(df.columns) == list(report.columns) and len(df) == len(SMALL) * len(expected)
    assert df["recall"].tolist() == [row["recall"] for row in report.rows()]


def test_cli_bench_writes_json_and_rejects_bad_input(tmp_path, capsys):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.html"
    code = main(["bench", "--models", "attn-v20-h8", "--prompts", "4", "--sequences", "2", "--format", "json",
                 "--out", str(out), "--plot", str(plot), "-q"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["attn-v20-h8"] and "precision" in plot.read_text()
    assert data["provenance"]["settings"]["sequences"] == 2
    for argv, message in ((["--models", "nope"], "unknown bench model 'nope'"),
                          (["--name-fraction", "0"], "--name-fraction must be in (0, 1]"),
                          (["--sequences", "1"], "--sequences must be >= 2"),
                          (["--device", "tpu"], "unknown device")):
        code = main(["bench", *argv, "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and message in err[0], (argv, err)


def test_bench_runs_on_a_model_outside_the_suite():
    """`bench_model` scores any model with a declared truth: the test helper's model."""
    from induction.bench.suite import bench_model

    model = build_induction_model()
    truth = Truth(induction=[(1, 0)], shifted_induction=[], circuit=[(0, 0), (1, 0)])
    result = bench_model(model, truth, "helper", BenchConfig(prompts=8, sequences=8))
    assert result.method("is_induction").named == [(1, 0)]
    assert result.method("is_shifted_induction").named == [] and result.method("is_shifted_induction").recall is None
    assert set(result.method("zero ablation").named) == {(0, 0), (1, 0)}


@pytest.mark.slow
def test_the_whole_bench_takes_under_a_minute_and_the_detectors_are_exact():
    start = time.perf_counter()
    full = bench(BenchConfig(device="cpu"))
    assert time.perf_counter() - start < 60
    for m in full.models:
        for name in ("is_induction", "is_shifted_induction"):
            s = m.method(name)
            assert (s.precision, s.recall) == (1.0, 1.0), (m.name, name)
        assert m.method("zero ablation").true_head_rank == len(m.truth.circuit)  # ordered perfectly
