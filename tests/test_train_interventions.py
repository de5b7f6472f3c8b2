"""Interventions during training (`induction train --intervene`): applied exactly, in their window,
recorded in the run, re-applied on resume; and, slow, what they do to induction-head formation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from induction.cli import main
from induction.loading.native import boot_native
from induction.loading.runs import read_manifest
from induction.training.defaults import config_key, default_config
from induction.training.interventions import (
    HeadIntervention,
    TrainingInterventions,
    head_params,
    parse_interventions,
)
from induction.training.train import TrainConfig, train
from tests.test_train import assert_same_run, tiny_config, weights

D_HEAD = 8  # tiny_config: d_model 32, 4 heads


def with_interventions(cfg: TrainConfig, interventions) -> TrainConfig:
    return replace(cfg, interventions=list(interventions))


def head_weights(w: dict[str, torch.Tensor], layer: int, head: int) -> dict[str, torch.Tensor]:
    """Head (layer, head)'s slices of a checkpoint's q/k/v/o tensors, by name (an independent
    reading of the layout `head_params` uses: rows of q/k/v, columns of o)."""
    rows = slice(head * D_HEAD, (head + 1) * D_HEAD)
    out = {}
    for name in ("q", "k", "v"):
        out[f"{name}.weight"] = w[f"blocks.{layer}.attn.{name}.weight"][rows]
        out[f"{name}.bias"] = w[f"blocks.{layer}.attn.{name}.bias"][rows]
    out["o.weight"] = w[f"blocks.{layer}.attn.o.weight"][:, rows]
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def changed_everywhere(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(not torch.equal(a[k], b[k]) for k in a)


# ---- the config ----------------------------------------------------------------------------------

def test_parse_and_validate_name_the_field():
    assert parse_interventions("L0H2=zero, L1H3=mean", "5:") == [
        HeadIntervention(0, 2, "zero", 5, None), HeadIntervention(1, 3, "mean", 5, None)]
    assert parse_interventions("L0H0=frozen", ":7") == [HeadIntervention(0, 0, "frozen", 0, 7)]
    for spec, window, message in [("L0H2=zap", None, "interventions: unknown kind 'zap'.*zero, mean, frozen"),
                                  ("L0H2", None, "interventions: 'L0H2' is not LAYERHHEAD=KIND"),
                                  ("L0H2=zero", "9", "interventions: the step window must be START:END"),
                                  ("L0H2=zero", "9:3", r"interventions: end must be an integer > start \(9\)")]:
        with pytest.raises(ValueError, match=message):
            parse_interventions(spec, window)
    for interventions, message in [([HeadIntervention(2, 0, "zero")], r"interventions\[0\]: layer 2 does not exist"),
                                   ([HeadIntervention(0, 4, "zero")], r"interventions\[0\]: head 4 does not exist"),
                                   ([{"layer": 0, "head": 1, "kind": "zero", "start": 24}],
                                    r"interventions\[0\]: start 24 is not before .*steps = 24"),
                                   ([HeadIntervention(0, 1, "zero"), HeadIntervention(0, 1, "mean")],
                                    r"interventions\[1\]: L0H1 has more than one"),
                                   ([{"layer": 0, "head": 1, "kind": "zero", "when": 3}], "interventions: unknown key")]:
        with pytest.raises(ValueError, match=message):
            with_interventions(tiny_config(), interventions)


def test_config_round_trips_and_runs_without_interventions_keep_their_dict_and_key():
    cfg = TrainConfig.from_dict({**tiny_config().to_dict(),
                                 "interventions": [HeadIntervention(0, 1, "zero", 3, 9).to_dict()]})
    assert cfg.interventions == [HeadIntervention(0, 1, "zero", 3, 9)]
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.to_dict() == cfg.to_dict()
    plain = tiny_config()
    assert "interventions" not in plain.to_dict()  # existing runs' manifests compare equal on resume
    assert TrainConfig.from_dict(plain.to_dict()) == plain
    # the default runs' cache key predates the field (the seed-0 default run is cached under it)
    assert config_key(default_config("2l")) == "184b144ffe02"


# ---- applied exactly ------------------------------------------------------------------------------

def _record_o_input(model, runner, step, tokens):
    """What W_O reads (`o.hook_in`, the heads' z flattened) in layer 0 during an intervened forward."""
    seen = {}
    with runner.hooks(step), model.hooks(fwd_hooks=[("blocks.0.attn.o.hook_in",
                                                      lambda x, hook: seen.setdefault("z", x.detach().clone()))]):
        loss = model(tokens, return_type="loss")
    return seen["z"], loss


def test_zero_and_mean_set_hook_z_exactly_and_only_inside_the_window():
    cfg = tiny_config()
    model = boot_native(cfg.model_config())
    tokens = torch.randint(1, 32, (6, 32), generator=torch.Generator().manual_seed(1))
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    z = clean["blocks.0.attn.hook_z"]  # [batch, pos, head_index, d_head]
    runner = TrainingInterventions([HeadIntervention(0, 1, "zero", 5, 10), HeadIntervention(0, 3, "mean", 5, 10)], model)
    expected = z.clone()
    expected[:, :, 1] = 0
    expected[:, :, 3] = z[:, :, 3].mean(0, keepdim=True)
    for step, want in [(4, z), (5, expected), (9, expected), (10, z)]:
        seen, _ = _record_o_input(model, runner, step, tokens)
        torch.testing.assert_close(seen.view_as(z), want, rtol=0, atol=1e-6, msg=f"update {step}")
    assert (_record_o_input(model, runner, 5, tokens)[0].view_as(z)[:, :, 1] == 0).all()
    # the zeroed head's write is gone: the same loss as with its W_O columns set to 0
    _, loss = _record_o_input(model, TrainingInterventions([HeadIntervention(0, 1, "zero")], model), 0, tokens)
    with torch.no_grad():
        model.blocks[0].attn.o.weight[:, D_HEAD:2 * D_HEAD] = 0
    torch.testing.assert_close(loss, model(tokens, return_type="loss"), rtol=1e-6, atol=1e-6)


def test_head_params_are_the_heads_weights():
    model = boot_native(tiny_config().model_config())
    (q, qi), (qb, _), *_, (o, oi) = head_params(model, 1, 2)
    torch.testing.assert_close(q[qi].T, model.W_Q[1, 2], rtol=0, atol=0)
    torch.testing.assert_close(o[oi].T, model.W_O[1, 2], rtol=0, atol=0)
    torch.testing.assert_close(qb[qi], model.b_Q[1, 2], rtol=0, atol=0)


@pytest.fixture(scope="module")
def intervened_run(tmp_path_factory) -> Path:
    """A tiny run with L0H1 zeroed, L0H2 frozen and L1H0 mean-ablated throughout, weight decay on
    (so a frozen head would drift if it were only left out of the gradient)."""
    cfg = with_interventions(tiny_config(weight_decay=0.1), parse_interventions("L0H1=zero,L0H2=frozen,L1H0=mean"))
    return train(cfg, tmp_path_factory.mktemp("intervened") / "run", progress=False)


def test_intervened_heads_do_not_train_and_the_others_do(intervened_run):
    init, last = weights(intervened_run, 0), weights(intervened_run, 24)
    # frozen: every slice bit-identical to init despite weight decay; the others all moved
    assert same(head_weights(last, 0, 2), head_weights(init, 0, 2))
    # zeroed hook_z: no gradient reaches the head's Q/K/V or its W_O columns; weight decay alone moves them
    decayed = {k: v * (1 - 0.1 * 1e-2) ** 24 for k, v in head_weights(init, 0, 1).items()}
    for k, v in head_weights(last, 0, 1).items():
        torch.testing.assert_close(v, decayed[k], rtol=1e-5, atol=1e-7, msg=k)
    # mean: Q/K/V get no gradient (decay only), W_O reads the mean and trains
    mean_last, mean_init = head_weights(last, 1, 0), head_weights(init, 1, 0)
    torch.testing.assert_close(mean_last["q.weight"], mean_init["q.weight"] * (1 - 1e-3) ** 24, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(mean_last["o.weight"], mean_init["o.weight"] * (1 - 1e-3) ** 24, rtol=1e-3, atol=1e-5)
    for layer, head in [(0, 0), (0, 3), (1, 1)]:
        assert changed_everywhere(head_weights(last, layer, head), head_weights(init, layer, head))


def test_the_run_records_its_interventions_and_reports_show_them(intervened_run, capsys):
    manifest = read_manifest(intervened_run)
    assert [i["kind"] for i in manifest["train_config"]["interventions"]] == ["zero", "frozen", "mean"]
    assert TrainConfig.from_dict(manifest["train_config"]).interventions[1] == HeadIntervention(0, 2, "frozen")
    from induction.jobs.scan import ScanConfig
    from induction.jobs.track import TrackConfig, track
    from induction.measures.icl import ICLConfig

    report = track(intervened_run, TrackConfig(scan=ScanConfig(icl=ICLConfig(n_sequences=4, n_bootstrap=0)), cache=False))
    assert "trained with interventions at every step: L0H1=zero, L0H2=frozen, L1H0=mean" in report.summary()
    assert report.to_json()["provenance"]["settings"]["train_config"]["interventions"][2]["kind"] == "mean"


def test_frozen_window_holds_init_only_inside_it(tmp_path):
    def run(window: str) -> Path:
        cfg = with_interventions(tiny_config(weight_decay=0.1), parse_interventions("L0H2=frozen", window))
        return train(cfg, tmp_path / window.replace(":", "_"), progress=False)

    early, late = run(":10"), run("10:")
    init = head_weights(weights(early, 0), 0, 2)
    assert same(head_weights(weights(early, 10), 0, 2), init)  # held through update 9
    assert changed_everywhere(head_weights(weights(early, 24), 0, 2), init)  # trains after
    assert changed_everywhere(head_weights(weights(late, 10), 0, 2), init)  # trains before
    assert same(head_weights(weights(late, 11), 0, 2), init)  # reset to init at update 10, held after
    assert same(head_weights(weights(late, 24), 0, 2), init)
    # a run with the window starting at 10 is the plain run up to step 10
    plain = train(tiny_config(weight_decay=0.1), tmp_path / "plain", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(weights(plain, 10).values(), weights(late, 10).values()))
    assert not torch.equal(weights(plain, 24)["blocks.1.attn.q.weight"], weights(late, 24)["blocks.1.attn.q.weight"])


def test_resume_reapplies_the_interventions(intervened_run, tmp_path):
    cfg = TrainConfig.from_dict(read_manifest(intervened_run)["train_config"])
    out = tmp_path / "run"
    train(cfg, out, progress=False, stop_after=7)
    train(cfg, out, resume=True, progress=False)
    assert_same_run(intervened_run, out)
    with pytest.raises(ValueError, match="differs in interventions"):
        train(tiny_config(weight_decay=0.1), out, resume=True, progress=False)


def test_global_rng_untouched_by_a_frozen_head(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cfg = with_interventions(tiny_config(steps=2), [{"layer": 0, "head": 0, "kind": "frozen"}])
    train(cfg, tmp_path / "run", progress=False)
    assert torch.equal(torch.rand(3), expected)


# ---- the CLI -------------------------------------------------------------------------------------

TINY = ["--d-model", "32", "--ctx", "32", "--vocab", "32", "--batch-size", "4", "--steps", "6",
        "--log-checkpoints", "2", "--checkpoint-every", "0", "--quiet", "--device", "cpu"]


def test_cli_records_interventions_and_resume_checks_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--intervene", "L0H1=zero,L1H2=frozen",
                 "--intervene-steps", "2:"]) == 0
    assert "interventions at every training step: L0H1=zero@2:, L1H2=frozen@2:" in capsys.readouterr().out
    saved = read_manifest(out)["train_config"]["interventions"]
    assert saved == [{"layer": 0, "head": 1, "kind": "zero", "start": 2, "end": None},
                     {"layer": 1, "head": 2, "kind": "frozen", "start": 2, "end": None}]
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0  # the run's own interventions
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--intervene", "L0H1=mean"]) == 2
    assert "different interventions" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--intervene", "L0H9=zero"], "--intervene: head 9 does not exist"),
    (["--intervene", "L5H0=zero"], "--intervene: layer 5 does not exist"),
    (["--intervene", "L0H1=zap"], "--intervene: unknown kind 'zap'"),
    (["--intervene", "L0H1=zero", "--intervene-steps", "x"], "--intervene-steps must be START:END"),
    (["--intervene", "L0H1=zero", "--intervene-steps", "6:"], "--intervene-steps: start 6 is not before"),
    (["--intervene-steps", "1:2"], "--intervene-steps needs --intervene"),
])
def test_cli_bad_interventions_are_one_line(tmp_path, capsys, args, message):
    assert main(["train", "--out", str(tmp_path / "run"), *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ---- what knocking heads out does to formation (slow) ----------------------------------------------

@pytest.mark.slow
def test_knocking_out_layer_0_heads_during_training(tmp_path):
    """The default recipe with layer-0 heads zeroed at every step (scripts/knockout_experiment.py).

    With every layer-0 head zeroed no induction head can form, at any seed: a layer-1 head's key at
    position j + 1 then holds only token j + 1 and the position, nothing about token j, so it cannot
    match the query's token against the token before (no K-composition without an earlier head).
    With the seed-0 default run's previous-token heads zeroed in a fresh run from the same seed,
    induction heads still form (another layer-0 head takes the role), but later than with as many
    other layer-0 heads zeroed: measured at seed 0 only (README, "Interventions during training"),
    so that part is checked at seed 0.
    """
    from induction.jobs.scan import ScanConfig, scan
    from induction.jobs.track import TrackConfig, track
    from induction.loading.models import ModelRef
    from induction.training.defaults import default_config, default_run, default_seed

    base = default_config("2l")
    blind = train(with_interventions(base, parse_interventions("L0H0=zero,L0H1=zero,L0H2=zero,L0H3=zero")),
                  tmp_path / "all", progress=False)
    report = track(blind, TrackConfig(cache=False))
    threshold = report.provenance["settings"]["track"]["scan"]["detector"]["prefix_threshold"]
    assert max(c.best_prefix_matching for c in report.checkpoints) < threshold / 2, report.summary()
    assert report.phase_change is None and not report.checkpoints[-1].induction_heads
    if default_seed() != 0:
        return
    heads = scan(ModelRef(str(default_run("2l")), device="cpu"), ScanConfig()).heads()
    layer0 = {h["head"]: h["previous_token"] for h in heads if h["layer"] == 0}
    prev = sorted(h for h, s in layer0.items() if s >= max(layer0.values()) / 2)
    assert prev == [1, 2]
    steps = {}
    for name, knocked in (("previous-token", prev), ("control", [0, 3])):
        cfg = with_interventions(base, [HeadIntervention(0, h, "zero") for h in knocked])
        steps[name] = track(train(cfg, tmp_path / name, progress=False), TrackConfig(cache=False)).phase_change.step
    assert steps["previous-token"] >= steps["control"] + 100, steps
