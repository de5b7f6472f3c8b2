"""Which heads does induction-head formation need? Knock heads out during training (Singh et al. 2024).

On the default recipe (`TrainConfig()`: the 2-layer attention-only toy, 1000 steps, seed 0) this
trains the same run again with an intervention at every step (`TrainConfig.interventions`) and
tracks each run (`induction track`):

  none            the default run itself (no intervention)
  previous-token  the previous-token heads of the seed-0 default run zeroed (`hook_z` = 0)
  control         as many other layer-0 heads zeroed, drawn at random (seeded): the layer-matched control
  all layer 0     every layer-0 head zeroed: no induction head can form (the layer-1 heads have
                  no earlier head's output to K-compose with)

The previous-token heads are found by scanning the seed-0 default run: the layer-0 heads whose
previous-token score is at least half the layer's best. Which layer-0 head becomes the
previous-token head is decided in training, so the experiment is a fresh run *from the same seed*
with those heads knocked out; if another head takes over the role, the report shows it (the
layer-0 previous-token scores at the last checkpoint).

Writes to OUT (default: knockout-runs/): one run directory per arm, `knockout.json` (per arm: the
knocked-out heads, phase change, the step where the best prefix-matching score first reaches the
detector's threshold, the final ICL score with its interval, the final induction heads, the final
layer-0 previous-token scores, transience) and the figure (formation curves of the arms; --figure,
default docs/figures/knockout.svg).

Usage:
    python scripts/knockout_experiment.py                       # ~1-3 min per run on one core
    python scripts/knockout_experiment.py --out /tmp/ko --steps 600 --figure /tmp/ko/knockout.svg
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.jobs.scan import ScanConfig, scan
from induction.jobs.track import TrackConfig, track
from induction.loading.models import ModelRef
from induction.plots import PALETTE, paper_layout, save_figure
from induction.training.defaults import default_config, default_run
from induction.training.interventions import HeadIntervention
from induction.training.train import TrainConfig, train


def previous_token_heads(run: Path) -> tuple[list[int], dict[int, float]]:
    """The layer-0 heads of `run`'s last checkpoint whose previous-token score is at least half the
    layer's best, and every layer-0 head's score."""
    report = scan(ModelRef(str(run), device="cpu"), ScanConfig())
    scores = {int(h["head"]): float(h["previous_token"]) for h in report.heads() if int(h["layer"]) == 0}
    best = max(scores.values())
    return sorted(h for h, s in scores.items() if s >= best / 2), scores


def arms(prev: list[int], n_heads: int, seed: int) -> dict[str, list[int]]:
    others = [h for h in range(n_heads) if h not in prev]
    control = sorted(random.Random(seed).sample(others, min(len(prev), len(others))))
    return {"none": [], "previous-token": prev, "control": control, "all layer 0": list(range(n_heads))}


def summarise(report, heads: list[int]) -> dict:
    last = report.checkpoints[-1]
    threshold = report.provenance["settings"]["track"]["scan"]["detector"]["prefix_threshold"]
    reached = next((c.step for c in report.checkpoints if c.best_prefix_matching >= threshold), None)
    return {
        "knocked_out": [f"L0H{h}" for h in heads],
        "phase_change": None if report.phase_change is None else report.phase_change.to_dict(),
        "first_step_prefix_matching_reaches_threshold": reached,
        "prefix_threshold": threshold,
        "final_step": last.step,
        "final_best_prefix_matching": last.best_prefix_matching,
        "final_best_head": f"L{last.best_head()['layer']}H{last.best_head()['head']}",
        "final_icl_score": last.icl_score,
        "final_icl_ci": (last.icl or {}).get("ci"),
        "final_held_out_loss": last.held_out_loss,
        "final_induction_heads": [f"L{layer}H{head}" for layer, head in last.induction_heads],
        "final_layer0_previous_token": {f"L0H{h['head']}": round(float(h["previous_token"]), 4)
                                        for h in last.heads if h["layer"] == 0},
        "transience": None if getattr(report, "transience", None) is None else report.transience.to_dict(),
    }


def figure(reports: dict, title: str) -> go.Figure:
    """Best prefix-matching score, ICL score and the best layer-0 previous-token score over training, one colour per arm."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("best prefix matching (max over heads)", "ICL score",
                                        "best layer-0 previous-token score"))
    for i, (name, report) in enumerate(reports.items()):
        points = [c for c in report.checkpoints if c.step >= 1]
        steps = [c.step for c in points]
        colour = PALETTE[i % len(PALETTE)]
        series = ([c.best_prefix_matching for c in points], [c.icl_score for c in points],
                  [max(h["previous_token"] for h in c.heads if h["layer"] == 0) for c in points])
        for row, ys in enumerate(series, start=1):
            fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines", name=name, legendgroup=name, showlegend=row == 1,
                                     line=dict(color=colour, width=2)), row=row, col=1)
        pc = report.phase_change
        if pc is not None:
            fig.add_vline(x=pc.step, line=dict(color=colour, width=1, dash="dash"), row="all", col=1)
    fig.update_xaxes(title_text="training step", row=3, col=1)  # linear: the arms differ between steps 400 and 800
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=2, col=1)
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=3, col=1)
    return paper_layout(fig, width=760, height=820, title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="knockout-runs", help="directory of the runs and knockout.json")
    parser.add_argument("--figure", default="docs/figures/knockout.svg", help="the figure (.svg, .png, .html)")
    parser.add_argument("--steps", type=int, help="training steps (default: the default recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="the default run's seed, and the control's draw")
    parser.add_argument("--arms", default="none,previous-token,control,all layer 0",
                        help="which arms to run, comma-separated")
    parser.add_argument("--train-only", action="store_true", help="train the runs, do not track them")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base: TrainConfig = replace(default_config("2l"), seed=args.seed)
    if args.steps:
        base = TrainConfig.from_dict({**base.to_dict(), "schedule": {**base.to_dict()["schedule"], "steps": args.steps}})
    reference = default_run("2l") if args.seed == 0 and not args.steps else None
    start = time.perf_counter()
    if reference is None:  # another seed or length: train its plain run first, and find its heads there
        reference = train(base, out / "none", resume=True, progress=True)
    prev, prev_scores = previous_token_heads(reference)
    print(f"previous-token heads of {reference}: {', '.join(f'L0H{h}' for h in prev)} "
          f"(layer-0 previous-token scores {prev_scores})", file=sys.stderr)
    wanted = [a.strip() for a in args.arms.split(",")]
    plan = {name: heads for name, heads in arms(prev, base.model.n_heads, args.seed).items() if name in wanted}
    runs = {}
    for name, heads in plan.items():
        if not heads:
            runs[name] = reference
            continue
        cfg = replace(base, interventions=[HeadIntervention(0, h, "zero") for h in heads])
        runs[name] = train(cfg, out / name.replace(" ", "-"), resume=True, progress=True)
    if args.train_only:
        return 0
    reports = {name: track(run, TrackConfig(), progress=True) for name, run in runs.items()}
    result = {"seed": args.seed, "steps": base.steps, "reference_run": str(reference),
              "reference_previous_token_scores": {f"L0H{h}": s for h, s in prev_scores.items()},
              "runtime_s": round(time.perf_counter() - start, 1),
              "arms": {name: summarise(reports[name], plan[name]) for name in plan}}
    (out / "knockout.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.figure:
        save_figure(figure(reports, f"Knocking out layer-0 heads during training (seed {args.seed})"), args.figure)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
