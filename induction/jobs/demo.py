"""`induction demo`: the whole pipeline on the embedded default models, written to one directory.

1. the default 2-layer attention-only model and its 1-layer control (`induction.training.defaults`; trained on
   first use, in parallel, then cached),
2. scan both (head scores, ICL score),
3. track both runs' checkpoints (formation curves, phase change),
4. ablate and patch every head of the 2-layer model against the ICL score (exact and attribution),
5. few-shot lookup accuracy vs shots under label manipulations, and the induction heads' share of it,
6. figures: DIR/index.html (interactive), DIR/figures/*.svg, DIR/report.md (tables, key numbers,
   figures), and every report as DIR/<name>.json.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from induction.common.fileio import write_json_atomic, write_text_atomic
from induction.common.stats import spearman

STEPS = 6


@dataclass
class DemoConfig:
    """Settings of the demo.

    Attributes:
        out_dir: where the reports and figures go (created).
        seed: seeds prompts and sampling (the default models have their own fixed seeds).
        parallel: train missing default models in parallel processes (one thread each).
        fewshot: run the few-shot part.
        draws: layer-matched random head sets in the ablation controls.
        progress: progress lines on stderr.
        device, dtype: where and in what precision the models are measured (`induction.loading.devices`;
            None: auto, float32). The default models are trained on the CPU either way.
        style: the style of the static figures (figures/*.svg): screen, or paper (`induction.plots.FigureStyle`);
            index.html always shows the screen style.
    """

    out_dir: Path
    seed: int = 0
    parallel: bool = True
    fewshot: bool = True
    draws: int = 10
    progress: bool = True
    device: str | None = None
    dtype: str | None = None
    style: str = "screen"

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.style not in ("screen", "paper"):
            raise ValueError(f"style must be screen or paper, got {self.style!r}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        from induction.loading.devices import resolve_device, resolve_dtype

        resolve_device(self.device), resolve_dtype(self.dtype)  # fail before training anything


@dataclass
class DemoResult:
    out_dir: Path
    reports: dict[str, Any] = field(default_factory=dict)
    key_numbers: dict[str, Any] = field(default_factory=dict)
    static_problems: dict[str, str] = field(default_factory=dict)
    runtime_s: float = 0.0


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def __call__(self, step: int, message: str) -> None:
        if self.enabled:
            print(f"[{step}/{STEPS}] {message}  ({time.perf_counter() - self.start:.0f}s)", file=sys.stderr, flush=True)


def _train_default(name: str) -> tuple[str, str, float]:
    from induction.training.defaults import default_run

    start = time.perf_counter()
    run = default_run(name, progress=False)
    return name, str(run), time.perf_counter() - start


def ensure_default_runs(names: list[str], parallel: bool, note: Callable[[str], None]) -> dict[str, Path]:
    """Run directories of the named default models, training the missing ones (in parallel)."""
    from induction.training.defaults import cache_dir, default_config, run_is_complete, run_path

    runs: dict[str, Path] = {}
    missing = []
    for name in names:
        run = run_path(name)
        if run_is_complete(run, default_config(name)):
            runs[name] = run
        else:
            missing.append(name)
    if missing:
        note(f"training {', '.join(missing)} (cache: {cache_dir()})")
        if parallel and len(missing) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=min(2, len(missing)), mp_context=mp.get_context("spawn")) as pool:
                results = list(pool.map(_train_default, missing))
        else:
            results = [_train_default(name) for name in missing]
        for name, run, seconds in results:
            runs[name] = Path(run)
            note(f"trained {name} in {seconds:.0f}s")
    return {name: runs[name] for name in names}


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo (module docstring) and return its reports and key numbers.

    Every report comes from a job of `induction.jobs`, with the settings the CLI would use, so the
    demo's numbers are the CLI's.
    """
    from induction import jobs, plots
    from induction.common.provenance import provenance
    from induction.heads.config import ScoreConfig
    from induction.inputs.prompts import RepeatedTokensConfig
    from induction.jobs import demo_page
    from induction.loading.devices import placement
    from induction.loading.models import load_model
    from induction.measures.effects import controllable
    from induction.measures.icl import ICLConfig
    from induction.reports.base import format_report

    start = time.perf_counter()
    progress = _Progress(cfg.progress)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=cfg.out_dir)
    reports = result.reports

    progress(1, "default models")
    runs = ensure_default_runs(["2l", "1l"], cfg.parallel, lambda m: progress(1, m))

    progress(2, "scanning heads")
    scan_cfg = jobs.ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(seed=cfg.seed)), icl=ICLConfig(seed=cfg.seed))
    models = {name: load_model(runs[name], device=cfg.device, dtype=cfg.dtype) for name in ("2l", "1l")}
    for name, model in models.items():
        reports[f"scan_{name}"] = jobs.scan(model, scan_cfg)

    progress(3, "tracking formation over checkpoints")
    for name in ("2l", "1l"):
        reports[f"track_{name}"] = jobs.track(runs[name], jobs.TrackConfig(scan=scan_cfg, device=cfg.device, dtype=cfg.dtype),
                                              progress=cfg.progress)

    progress(4, "ablating and patching heads (ICL score)")
    model = models["2l"]
    metric = jobs.MetricSpec(name="icl", sequences=32, seed=cfg.seed)
    # All of a layer's heads can be induction heads; the control needs other heads in the same layers.
    control_heads = tuple(controllable(reports["scan_2l"].scores.induction_heads(), model.cfg.n_heads)) or None
    label = None if control_heads is None else f"the {len(control_heads)} strongest induction heads"
    for method in ("zero", "mean"):
        reports[f"ablate_{method}"] = jobs.ablate(model, jobs.AblateConfig(
            method=method, metric=metric, heads=control_heads, heads_label=label, draws=cfg.draws))
    for method in ("exact", "attribution"):
        reports[f"patch_{method}"] = jobs.patch(model, jobs.PatchConfig(method=method, metric=metric))

    if cfg.fewshot:
        # Lookup is pure induction, so the default model (trained on repeats only) performs it: the demo
        # needs no third model. `induction train --data fewshot` trains one for the rule and
        # classification tasks.
        progress(5, "few-shot lookup under label manipulations")
        reports["fewshot"] = jobs.fewshot(model, jobs.FewShotConfig(
            task="lookup", labels=("gold", "flipped", "random"), shots=(0, 1, 2, 4, 8), n_prompts=200, seed=cfg.seed,
            ablate_heads=control_heads, ablate_shots=8, ablate_draws=cfg.draws))
    else:
        progress(5, "few-shot skipped")

    progress(6, "figures and reports")
    figures = _figures(reports)
    for name, report in reports.items():
        write_json_atomic(cfg.out_dir / f"{name}.json", report.to_json())
    import plotly.graph_objects as go

    static = {name: plots.apply_style(go.Figure(fig), cfg.style) for name, fig in figures.items()}  # copies: HTML unchanged
    result.static_problems = plots.save_figures(static, cfg.out_dir / "figures")
    result.key_numbers = key_numbers(reports)
    result.runtime_s = time.perf_counter() - start
    write_json_atomic(cfg.out_dir / "demo.json", {
        "key_numbers": result.key_numbers, "summary": [f.to_dict() for f in demo_page.findings(reports)],
        "runs": {k: str(v) for k, v in runs.items()},
        "static_figures": "ok" if not result.static_problems else next(iter(result.static_problems.values())),
        "provenance": provenance("embedded defaults", None, cfg.seed, {"draws": cfg.draws, "fewshot": cfg.fewshot},
                                 result.runtime_s, **placement(models["2l"])),
    })
    views = pattern_views(reports, models, runs, scan_cfg, cfg)
    write_text_atomic(cfg.out_dir / "index.html", demo_page.index_html(figures, reports, result, views))
    write_text_atomic(cfg.out_dir / "report.md", demo_page.report_md(reports, figures, result, format_report))
    progress(6, f"done: {cfg.out_dir}/index.html, report.md")
    return result


def _figures(reports: dict[str, Any]) -> dict[str, Any]:
    from induction import plots

    exact, attribution = reports["patch_exact"], reports["patch_attribution"]
    figs = {
        "scan_2l": reports["scan_2l"].plot("heatmap"),
        "scatter_2l": reports["scan_2l"].plot("scatter"),
        "scan_1l": reports["scan_1l"].plot("heatmap"),
        "formation_2l": reports["track_2l"].plot(),
        "formation_1l": reports["track_1l"].plot(),
        "mosaic_2l": reports["track_2l"].plot("mosaic"),
        "ablate_zero": reports["ablate_zero"].plot(),
        "ablate_mean": reports["ablate_mean"].plot(),
        "patch_exact": exact.plot(),
        "patch_vs_attribution": plots.plot_patching_comparison(exact.effects, attribution.effects, exact.metric),
    }
    if "fewshot" in reports:
        figs["fewshot"] = reports["fewshot"].plot()
        if reports["fewshot"].ablation is not None:
            figs["fewshot_ablation"] = reports["fewshot"].plot("ablation")
    return figs


def key_numbers(reports: dict[str, Any]) -> dict[str, Any]:
    """The demo's headline numbers, all read from the reports (so they match the JSON files)."""
    out: dict[str, Any] = {}
    for name in ("2l", "1l"):
        scan = reports[f"scan_{name}"]
        out[f"{name}_induction_heads"] = [f"L{layer}H{h}" for layer, h in scan.scores.induction_heads()]
        out[f"{name}_best_prefix_matching"] = float(scan.heads().best()["prefix_matching"])
        out[f"{name}_icl_score"] = scan.icl.score if scan.icl else None
        pc = reports[f"track_{name}"].phase_change
        out[f"{name}_phase_change"] = None if pc is None else pc.to_dict()
    for method in ("zero", "mean"):
        rep = reports[f"ablate_{method}"]
        top = rep.rows()[0]
        out[f"ablate_{method}_top"] = {"head": f"L{top['layer']}H{top['head']}", "effect": top["effect"]}
        control = rep.control_json()
        if control:
            out[f"ablate_{method}_induction_vs_random"] = {
                "induction_effect": control["effect"], "random_effect": control["random_effect"],
                "random_effect_ci": control["random_effect_ci"],
                "distinct_random_sets": control["distinct_random_sets"], "heads": control["heads_label"]}
    exact, attr = reports["patch_exact"], reports["patch_attribution"]
    out["patch_rank_correlation"] = spearman(exact.effects, attr.effects)
    if "fewshot" in reports:
        fs = reports["fewshot"]
        out["fewshot_lookup_accuracy"] = {f"{s.labels}@k={s.k}": round(s.accuracy, 3) for s in fs.shots}
        if fs.ablation is not None:
            a = fs.ablation.to_dict()
            out["fewshot_ablation"] = {"baseline": a["baseline"]["accuracy"], "top_heads": a["top"]["accuracy"],
                                       "random_heads": a["random_accuracy"],
                                       "top": [f"L{layer}H{h}" for layer, h in a["top_heads"]]}
    return out


def pattern_views(reports: dict[str, Any], models: dict[str, Any], runs: dict[str, Path], scan_cfg: Any,
                  cfg: DemoConfig) -> dict[str, str]:
    """The page's pattern viewers: every head of each model on the scan's first prompts (linked from
    its heatmap), and the 2-layer model's induction heads over its checkpoints (a slider)."""
    from induction.heads.patterns import PatternConfig, head_patterns
    from induction.heads.scores import build_prompts
    from induction.jobs.patterns import mark_window, run_patterns
    from induction.plots.patterns import pattern_view_html

    views = {}
    scores = reports["scan_2l"].scores
    induction = sorted(scores.induction_heads(), key=lambda lh: -float(scores.prefix_matching[lh]))
    titles = {"2l": "Default 2-layer model: every head on the scan's prompts",
              "1l": "1-layer control: every head on the scan's prompts"}
    for name, model in models.items():
        heads = [(layer, h) for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
        prompts = build_prompts(model, scan_cfg.detector.prompts)
        patterns = head_patterns(model, heads, prompts, PatternConfig(n_prompts=2))
        best = reports[f"scan_{name}"].scores.prefix_matching.flatten().argmax().item()
        views[f"patterns_{name}"] = pattern_view_html(patterns, titles[name], "uint8", view_id=f"patterns_{name}",
                                                      initial=divmod(best, model.cfg.n_heads))
    if induction:
        pc = reports["track_2l"].phase_change
        window = [] if pc is None else [c.step for c in reports["track_2l"].checkpoints if pc.start_step <= c.step <= pc.end_step]
        frames = run_patterns(runs["2l"], induction, scan_cfg.detector.prompts, device=cfg.device, dtype=cfg.dtype,
                              include=window)
        if pc is not None:
            frames = mark_window(frames, pc.start_step, pc.end_step)
        views["patterns_track_2l"] = pattern_view_html(
            frames, "The induction heads over training: move the slider across the phase change", "uint8",
            view_id="patterns_track_2l")
    return views
