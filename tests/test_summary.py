"""The demo summary's findings, from hand-written report JSON: each number, interval and branch."""

from __future__ import annotations

from induction.reports.summary import causal_effect, demo_findings, fewshot, phase_change


def head(layer, h, pm, induction, ci=(0.0, 1.0)):
    return {"layer": layer, "head": h, "prefix_matching": pm, "is_induction": induction, "prefix_matching_ci": list(ci)}


SCAN = {"heads": [head(0, 0, 0.02, False), head(1, 0, 0.7, True, (0.65, 0.75)), head(1, 1, 0.9, True, (0.88, 0.93))],
        "thresholds": {"prefix_matching": 0.4, "copying": 0.5},
        "icl": {"score": -2.5, "ci": [-2.75, -2.25], "early_pos": 12, "late_pos": 125}}
CONTROL = {"heads": [head(0, 0, 0.05, False)], "icl": {"score": -0.5, "ci": [-0.625, -0.375]}}
TRACK = {"phase_change": {"step": 300, "start_step": 250, "end_step": 350}}
ABLATE = {"method": "zero", "heads": [{"layer": 0, "head": 0, "effect": 1.5}, {"layer": 1, "head": 1, "effect": -0.25}],
          "control": {"heads": [[1, 1]], "heads_label": "the strongest induction head", "effect": 0.75,
                      "random_sets": [[[1, 0]], [[0, 0]]], "random_effect": 0.125, "random_effect_ci": [0.0, 0.25],
                      "distinct_random_sets": 2}}
FEWSHOT = {"task": "lookup", "shots": [{"labels": "gold", "k": 0, "accuracy": 0.02, "accuracy_ci": [0.0, 0.05]},
                                       {"labels": "gold", "k": 4, "accuracy": 0.875, "accuracy_ci": [0.8, 0.95]},
                                       {"labels": "flipped", "k": 4, "accuracy": 0.5, "accuracy_ci": [0.4, 0.6]}]}


def test_findings_read_every_number_and_interval():
    found = {f.key: f for f in demo_findings({"scan_2l": SCAN, "scan_1l": CONTROL, "track_2l": TRACK,
                                               "track_1l": {"phase_change": None}, "ablate_zero": ABLATE,
                                               "fewshot": FEWSHOT})}
    assert list(found) == ["induction_heads", "icl_score", "phase_change", "causal_effect", "fewshot"]
    heads = found["induction_heads"]
    assert heads.value == "L1H1, L1H0" and heads.interval == "strongest L1H1: prefix matching 0.90, 95% CI 0.88 to 0.93"
    assert "2 heads in layer 1" in heads.sentence and "has none (its best prefix matching is 0.05)" in heads.sentence
    icl = found["icl_score"]
    assert (icl.value, icl.interval) == ("-2.50 nats", "95% CI -2.75 to -2.25")
    assert "token 125 is 2.50 nats lower than at token 12" in icl.sentence and "-0.50 (95% CI -0.62 to -0.38)" in icl.sentence
    pc = found["phase_change"]
    assert pc.value == "step 300" and pc.interval.startswith("window: steps 250 to 350") and pc.sentence.endswith("has none.")
    effect = found["causal_effect"]
    assert effect.value == "+0.75 nats on the ICL score" and effect.interval == "layer-matched random heads: +0.12; 95% CI +0.00 to +0.25, 2 distinct sets"
    assert "(those, L1H0, are induction heads too)" in effect.sentence and "L0H0's (+1.50)" in effect.sentence
    shots = found["fewshot"]
    assert (shots.value, shots.interval) == ("0.875", "95% CI 0.800 to 0.950")
    assert "with 4 demonstrations (with none: 0.02)" in shots.sentence and "flipped labels it follows the labels shown (0.50)" in shots.sentence


def test_findings_without_a_phase_change_a_control_or_few_shot():
    assert phase_change({"phase_change": None}, None).value == "none found"
    single = {**ABLATE, "control": {**ABLATE["control"], "distinct_random_sets": 1}}
    assert "only 1 distinct set" in causal_effect(single).interval and "induction heads too" not in causal_effect(single).sentence
    assert causal_effect({**ABLATE, "control": None}) is None
    assert fewshot({"shots": [FEWSHOT["shots"][2]]}) is None  # no gold labels: nothing to headline
    keys = [f.key for f in demo_findings({"scan_2l": {**SCAN, "icl": None}, "track_2l": TRACK})]
    assert keys == ["induction_heads", "phase_change"]
