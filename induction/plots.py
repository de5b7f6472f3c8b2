"""Figures, drawn from the same report objects as the tables (`Report.plot()`), in one paper style.

Each function takes a report's contents (head scores, checkpoints, shot results, effects), typed,
so `induction.report` calls it and this module imports no report and no job; compute modules never
import it.

Style: Okabe-Ito colour-blind-safe palette, a sequential (viridis) / diverging (RdBu) colour scale
for heatmaps, 12 pt text at a column width of ~3.4 in (500 px at 150 dpi), labelled axes with units.
`save_figure(fig, path)` writes .html always, and .png/.svg/.pdf through kaleido when it can; when it
cannot, it raises `PlotExportError` saying how to enable it (HTML still works).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from induction.bench import ModelBench
from induction.fewshot.ablation import FewShotAblation, HeadAttribution
from induction.fewshot.evaluate import ShotResult
from induction.fewshot.vectors import ZERO_SHOT_FORMS, FunctionVectors
from induction.fileio import atomic_path
from induction.formation import CheckpointScores, PhaseChange
from induction.scores import HeadScores

# Okabe & Ito (2008), colour-blind safe.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
FONT = dict(family="Helvetica, Arial, sans-serif", size=12, color="#222")
COLUMN_WIDTH_PX = 500
STATIC_FORMATS = (".png", ".svg", ".pdf")
FIGURE_FORMATS = (".html", *STATIC_FORMATS)

SCORE_LABELS = {
    "prefix_matching": "prefix-matching score",
    "copying": "copying score",
    "copying_ov": "OV copying (eigenvalue) score",
    "previous_token": "previous-token score",
    "duplicate_token": "duplicate-token score",
    "offset_prefix_matching": "offset prefix-matching (at the induction offset)",
    "offset_copying": "offset copying (at the induction offset)",
}
SIGNED_SCORES = {"copying", "copying_ov", "offset_copying"}


class PlotExportError(RuntimeError):
    """A figure format that cannot be written on this machine (message says how to enable it)."""


def paper_layout(fig: go.Figure, width: int = COLUMN_WIDTH_PX, height: int = 380, title: str | None = None) -> go.Figure:
    """Apply the shared paper style in place and return the figure."""
    fig.update_layout(
        template="simple_white", font=FONT, width=width, height=height,
        margin=dict(l=60, r=20, t=50 if title else 20, b=55),
        title=dict(text=title, x=0.02, xanchor="left", font=dict(size=13)) if title else None,
        colorway=list(PALETTE), legend=dict(font=dict(size=11)),
    )
    return fig


def head_heatmap(values: np.ndarray, label: str, signed: bool = False, title: str | None = None,
                 marks: np.ndarray | None = None, zrange: tuple[float, float] | None = None) -> go.Figure:
    """A layer x head heatmap of one per-head quantity; `marks` outlines selected heads."""
    n_layers, n_heads = values.shape
    if zrange is None:
        zrange = (-1.0, 1.0) if signed else (0.0, 1.0)
    text = [[f"{values[layer, h]:.2f}" for h in range(n_heads)] for layer in range(n_layers)]
    fig = go.Figure(
        go.Heatmap(
            z=values, x=list(range(n_heads)), y=list(range(n_layers)), zmin=zrange[0], zmax=zrange[1],
            colorscale="RdBu" if signed else "Viridis", reversescale=signed,
            colorbar=dict(title=dict(text=label, side="right"), thickness=12),
            text=text, texttemplate="%{text}", textfont=dict(size=10),
            hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>",
        )
    )
    if marks is not None:
        for layer, h in zip(*np.nonzero(marks)):
            fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                          line=dict(color="#000", width=2.5))
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 60 * n_heads + 160), height=max(260, 45 * n_layers + 140), title=title)


def plot_scan(s: HeadScores, name: str, kind: str = "heatmap") -> go.Figure:
    """Scan figures: `heatmap` (prefix-matching, copying and the offset prefix-matching, each cell of
    the last labelled with its induction offset d; induction heads outlined solid, shifted induction
    heads dashed), `scatter` (prefix-matching vs copying, Olsson et al. 2022), or any single score name."""
    marks = s.is_induction.numpy()
    shifted = s.is_shifted_induction.numpy()
    if kind in SCORE_LABELS:
        values = getattr(s, kind).numpy()
        return head_heatmap(values, SCORE_LABELS[kind], signed=kind in SIGNED_SCORES, marks=marks,
                            title=f"{SCORE_LABELS[kind]} — {name}")
    if kind == "scatter":
        return prefix_copying_scatter(s, title=f"Induction heads — {name}")
    if kind != "heatmap":
        raise ValueError(f"unknown scan plot {kind!r}; choose heatmap, scatter or one of {', '.join(SCORE_LABELS)}")
    panels = (("prefix_matching", False), ("copying", True), ("offset_prefix_matching", False))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("prefix matching", "copying", "offset prefix matching (d)"),
                        horizontal_spacing=0.1)
    offset = s.induction_offset.numpy()
    domains = [fig.layout[f"xaxis{'' if col == 1 else col}"].domain for col in (1, 2, 3)]
    for col, (score, signed) in enumerate(panels, start=1):
        values = getattr(s, score).numpy()
        if score == "offset_prefix_matching":  # each cell: its score and the offset d it is at
            text = [[f"{values[layer, h]:.2f}<br>d={offset[layer, h]}" if np.isfinite(values[layer, h]) else ""
                     for h in range(s.n_heads)] for layer in range(s.n_layers)]
            style = dict(text=text, texttemplate="%{text}")
        else:
            style = dict(texttemplate="%{z:.2f}")
        fig.add_trace(
            go.Heatmap(
                z=values, x=list(range(s.n_heads)), y=list(range(s.n_layers)),
                zmin=-1.0 if signed else 0.0, zmax=1.0, colorscale="RdBu" if signed else "Viridis",
                reversescale=signed, textfont=dict(size=10), showscale=col <= 2,
                colorbar=dict(x=domains[col - 1][1] + 0.008, xanchor="left", thickness=10, len=0.9),
                hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>", **style,
            ),
            row=1, col=col,
        )
        for flagged, dash in ((marks, "solid"), (shifted, "dash")):
            for layer, h in zip(*np.nonzero(flagged)):
                fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                              line=dict(color="#000", width=2.5, dash=dash), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, autorange="reversed",
                         showticklabels=col == 1, row=1, col=col)  # the layers are the same in every panel
    width = max(3 * COLUMN_WIDTH_PX - 150, 170 * s.n_heads + 300)
    return paper_layout(fig, width=width, height=max(280, 45 * s.n_layers + 150),
                        title=f"Head scores — {name} (induction heads outlined, shifted induction heads dashed)")


def prefix_copying_scatter(s: HeadScores, title: str | None = None) -> go.Figure:
    """Prefix-matching vs copying per head, coloured by layer, with the detector's thresholds."""
    fig = go.Figure()
    for layer in range(s.n_layers):
        fig.add_trace(
            go.Scatter(
                x=s.prefix_matching[layer].numpy(), y=s.copying[layer].numpy(), mode="markers",
                name=f"layer {layer}", marker=dict(size=9, color=PALETTE[layer % len(PALETTE)],
                                                   line=dict(width=0.5, color="#333")),
                text=[f"L{layer}H{h}" for h in range(s.n_heads)],
                hovertemplate="%{text}: prefix %{x:.3f}, copying %{y:.3f}<extra></extra>",
            )
        )
    cfg = s.config
    fig.add_shape(type="rect", x0=cfg.prefix_threshold, x1=1.02, y0=cfg.copying_threshold, y1=1.02,
                  fillcolor="rgba(0,158,115,0.10)", line=dict(width=0), layer="below")
    fig.update_xaxes(title_text="prefix-matching score (attention fraction)", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="copying score", range=[-1.05, 1.05])
    return paper_layout(fig, title=title)


def save_figure(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` to .html (always works) or .png/.svg/.pdf (needs kaleido + Chrome/Chromium).

    Written to a temporary file and renamed, so a failed export leaves nothing behind.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise PlotExportError(f"cannot write a figure to {path.name}: use one of {', '.join(FIGURE_FORMATS)}")
    if not path.parent.exists():
        raise PlotExportError(f"cannot write {path}: directory {path.parent} does not exist")
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".html":
            fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
        else:
            _write_static(fig, str(tmp), suffix)
    return path


def static_export_problem() -> str | None:
    """None when .png/.svg/.pdf export works here, else what is missing and how to enable it."""
    import importlib.util

    if importlib.util.find_spec("kaleido") is None:
        return "static figures need kaleido: `pip install kaleido` (HTML works without it)"
    if _find_chrome() is None:
        return ("static figures need a Chrome/Chromium binary for kaleido: `apt-get install chromium` "
                "(or set BROWSER_PATH); HTML works without it")
    return None


def _find_chrome() -> str | None:
    import shutil

    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _write_static(fig: go.Figure, tmp: str, suffix: str) -> None:
    problem = static_export_problem()
    if problem:
        raise PlotExportError(f"cannot write {suffix} figure: {problem}")
    chrome = _find_chrome()
    if chrome and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = chrome
    try:
        fig.write_image(tmp, format=suffix.lstrip("."), scale=2 if suffix == ".png" else 1)
    except Exception as exc:  # kaleido/choreographer raise assorted errors when Chrome fails
        raise PlotExportError(f"static export to {suffix} failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "HTML works: use a .html path") from None


# ---- few-shot ------------------------------------------------------------------------------------

LABEL_VARIANT_NAMES = {
    "gold": "gold labels", "random": "random labels", "flipped": "flipped labels",
    "unrelated": "unrelated labels", "random_inputs": "random inputs", "random_label_space": "random label space",
    "shuffled": "shuffled labels",
}


def plot_fewshot(shots: Sequence[ShotResult], labels: Sequence[str], title: str) -> go.Figure:
    """Accuracy vs number of demonstrations k, one line per label variant.

    Solid: agreement with the in-context answer (95% bootstrap CI as error bars); dotted, for
    manipulated labels: agreement with the gold label, in the same colour.
    """
    fig = go.Figure()
    for i, variant in enumerate(labels):
        points = sorted((s for s in shots if s.labels == variant), key=lambda s: s.k)
        colour = PALETTE[i % len(PALETTE)]
        ks = [s.k for s in points]
        acc = [s.accuracy for s in points]
        hi = [(s.accuracy_ci[1] - s.accuracy) if s.accuracy_ci else 0.0 for s in points]
        lo = [(s.accuracy - s.accuracy_ci[0]) if s.accuracy_ci else 0.0 for s in points]
        fig.add_trace(go.Scatter(
            x=ks, y=acc, mode="lines+markers", name=LABEL_VARIANT_NAMES.get(variant, variant),
            line=dict(color=colour, width=2), marker=dict(size=7),
            error_y=dict(type="data", array=hi, arrayminus=lo, thickness=1.2, width=3),
            hovertemplate="k=%{x}: %{y:.3f}<extra>" + variant + "</extra>",
        ))
        if variant != "gold":
            fig.add_trace(go.Scatter(
                x=ks, y=[s.accuracy_gold for s in points], mode="lines", name=f"{LABEL_VARIANT_NAMES.get(variant, variant)} (vs gold)",
                line=dict(color=colour, width=1.5, dash="dot"), showlegend=True,
                hovertemplate="k=%{x}: %{y:.3f}<extra>" + variant + " vs gold</extra>",
            ))
    ks = sorted({s.k for s in shots})
    fig.update_xaxes(title_text="demonstrations in the prompt (k)", tickvals=ks,
                     type="log" if len(ks) > 3 and min(ks) >= 1 else "linear")
    fig.update_yaxes(title_text="top-1 accuracy", range=[-0.03, 1.03])
    return paper_layout(fig, title=title)


def plot_fewshot_ablation(result: FewShotAblation) -> go.Figure:
    """Accuracy unablated, with the head set ablated, and with each layer-matched random head set
    ablated, 95% bootstrap CIs as error bars."""
    d = result.to_dict()
    top = ", ".join(f"L{layer}H{h}" for layer, h in d["top_heads"])
    bars = [("unablated", d["baseline"]), (f"ablated ({top})", d["top"]),
            ("layer-matched random", {"accuracy": d["random_accuracy"], "accuracy_ci": d["random_accuracy_ci"]})]
    fig = go.Figure()
    for i, (label, res) in enumerate(bars):
        ci = res["accuracy_ci"] or (res["accuracy"], res["accuracy"])
        fig.add_trace(go.Bar(
            x=[label], y=[res["accuracy"]], marker_color=PALETTE[i], name=label, showlegend=False,
            error_y=dict(type="data", array=[ci[1] - res["accuracy"]], arrayminus=[res["accuracy"] - ci[0]]),
        ))
    fig.add_trace(go.Scatter(
        x=["layer-matched random"] * len(d["random"]), y=[r["accuracy"] for r in d["random"]], mode="markers",
        marker=dict(color="#000", size=5, opacity=0.6), name="random draws", showlegend=False,
        hovertext=[", ".join(f"L{layer}H{h}" for layer, h in r["heads"]) for r in d["random"]],
    ))
    fig.update_yaxes(title_text="top-1 accuracy", range=[0, 1.05])
    return paper_layout(fig, title=f"Ablating heads: {d['task']}, k={d['k']} ({d['method']} ablation)")


def plot_task_probs(shots: Sequence[ShotResult], task: str, title: str) -> go.Figure:
    """Task inference: on prompts of `task` (gold labels), the mean probability of each task's
    answer f_s(query) vs the number of demonstrations k, one line per task s (the true task thick)."""
    points = sorted((s for s in shots if s.labels == "gold" and s.task_probs), key=lambda s: s.k)
    if not points:
        raise ValueError("no task probabilities: they need gold labels on a model trained on the tasks stream")
    fig = go.Figure()
    ks = [s.k for s in points]
    for i, name in enumerate(points[0].task_probs):
        fig.add_trace(go.Scatter(
            x=ks, y=[s.task_probs[name] for s in points], mode="lines+markers", name=f"P({name} answer)",
            line=dict(color=PALETTE[i % len(PALETTE)], width=3 if name == task else 1.5),
            hovertemplate="k=%{x}: %{y:.3f}<extra>" + name + "</extra>",
        ))
    fig.update_xaxes(title_text="demonstrations in the prompt (k)", tickvals=ks)
    fig.update_yaxes(title_text="mean probability", range=[-0.03, 1.03])
    return paper_layout(fig, title=title)


def plot_function_vectors(vectors: FunctionVectors, title: str) -> go.Figure:
    """Left: each head's indirect effect averaged over the tasks (the vector's heads outlined).
    Right: per task, zero-shot accuracy without and with the function vector, for each prompt form
    (bare: the query alone; format: uninformative demonstrations first), 95% bootstrap CIs."""
    mean_ie = vectors.mean_indirect_effects.numpy()
    n_layers, n_heads = mean_ie.shape
    fig = make_subplots(rows=1, cols=2, column_widths=[0.38, 0.62], horizontal_spacing=0.16,
                        subplot_titles=("indirect effect (mean over tasks)", "zero-shot accuracy"))
    bound = float(np.abs(mean_ie).max()) or 1.0
    fig.add_trace(go.Heatmap(
        z=mean_ie, x=list(range(n_heads)), y=list(range(n_layers)), zmin=-bound, zmax=bound, colorscale="RdBu",
        reversescale=True, showscale=False, text=[[f"{v:.2f}" for v in row] for row in mean_ie],
        texttemplate="%{text}", textfont=dict(size=10), hovertemplate="L%{y}H%{x}: %{z:.3f}<extra></extra>",
    ), row=1, col=1)
    for layer, h in vectors.heads:
        fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color="#000", width=2.5), row=1, col=1)
    tasks = [t.task for t in vectors.tasks]
    bars = [(form, with_fv) for form in ZERO_SHOT_FORMS for with_fv in (False, True)]
    for i, (form, with_fv) in enumerate(bars):
        values, lo, hi = [], [], []
        for t in vectors.tasks:
            z = t.zero_shot[form]
            value, ci = (z.fv_accuracy, z.fv_accuracy_ci) if with_fv else (z.accuracy, z.accuracy_ci)
            values.append(value)
            lo.append(value - ci[0] if ci else 0.0)
            hi.append(ci[1] - value if ci else 0.0)
        fig.add_trace(go.Bar(
            x=tasks, y=values, name=f"{form}{' + FV' if with_fv else ''}",
            marker=dict(color=PALETTE[ZERO_SHOT_FORMS.index(form)], opacity=1.0 if with_fv else 0.4),
            error_y=dict(type="data", array=hi, arrayminus=lo, thickness=1.2, width=3),
        ), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="head", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="top-1 accuracy", range=[0, 1.05], row=1, col=2)
    return paper_layout(fig, width=2 * COLUMN_WIDTH_PX, height=380, title=title)


def plot_head_attribution(attribution: HeadAttribution, title: str) -> go.Figure:
    """Per label variant: in-context accuracy with each head ablated alone (heatmaps, the ablated
    set outlined), then the set ablated together vs layer-matched random sets (bars: accuracy vs
    the in-context answer; diamonds: vs the gold answer)."""
    variants = attribution.variants
    fig = make_subplots(rows=1, cols=len(variants) + 1, horizontal_spacing=0.06,
                        subplot_titles=[f"{v.labels}: {v.accuracy:.2f} unablated" for v in variants] + ["head set"])
    for col, v in enumerate(variants, start=1):
        values = v.head_accuracy.numpy()
        fig.add_trace(go.Heatmap(
            z=values, x=list(range(values.shape[1])), y=list(range(values.shape[0])), zmin=0.0, zmax=1.0,
            colorscale="Viridis", showscale=col == 1, colorbar=dict(title=dict(text="accuracy", side="right"),
                                                                    thickness=12, x=-0.12),
            text=[[f"{x:.2f}" for x in row] for row in values], texttemplate="%{text}", textfont=dict(size=10),
            hovertemplate="L%{y}H%{x} ablated: %{z:.3f}<extra>" + v.labels + "</extra>",
        ), row=1, col=col)
        for layer, h in attribution.heads:
            fig.add_shape(type="rect", x0=h - 0.5, x1=h + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                          line=dict(color="#000", width=2.5), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, dtick=1, autorange="reversed",
                         showticklabels=col == 1, row=1, col=col)  # the layers are the same in every panel
    col = len(variants) + 1
    for i, (label, key) in enumerate((("unablated", "baseline"), ("set ablated", "top"), ("random sets", "random"))):
        acc, gold = [], []
        for v in variants:
            d = v.set_ablation.to_dict()
            if key == "random":
                acc.append(d["random_accuracy"])
                gold.append(d["random_accuracy_gold"])
            else:
                acc.append(d[key]["accuracy"])
                gold.append(d[key]["accuracy_gold"])
        names = [v.labels for v in variants]
        fig.add_trace(go.Bar(x=names, y=acc, name=label, marker_color=PALETTE[i]), row=1, col=col)
        fig.add_trace(go.Scatter(x=names, y=gold, mode="markers", name=f"{label} (vs gold)", showlegend=i == 0,
                                 marker=dict(symbol="diamond", color="#000", size=7), offsetgroup=str(i)),
                      row=1, col=col)
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_yaxes(title_text="top-1 accuracy", range=[0, 1.05], row=1, col=col)
    heads = ", ".join(f"L{layer}H{h}" for layer, h in attribution.heads)
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 260 * (len(variants) + 1)), height=360,
                        title=f"{title} — k={attribution.k}, {attribution.method} ablation of {heads}")


def plot_effects(effects: Tensor, metric: str, title: str) -> go.Figure:
    """Layer x head heatmap of each head's effect (value - baseline) on `metric`."""
    values = effects.numpy()
    bound = float(np.nanmax(np.abs(values))) or 1.0
    return head_heatmap(values, f"Δ {metric}", signed=True, zrange=(-bound, bound), title=title)


def plot_formation(checkpoints: Sequence[CheckpointScores], phase_change: PhaseChange | None, name: str,
                   ablation: dict | None = None) -> go.Figure:
    """Formation curves over training (Olsson et al. 2022, argument 1).

    Four panels on a shared log-step axis: each head's prefix-matching score, each head's copying
    score (one colour per head, heads flagged as induction heads at the last checkpoint drawn thick),
    the ICL score, and the train (smoothed) and held-out loss. The phase-change window (10%-90%) is
    shaded and its steepest point dashed. Step 0 cannot sit on a log axis and is left out.

    With `ablation` (the `track --ablate` report's block) a fifth panel: the change of the ICL score
    when the final induction heads are ablated together, the sum of their single-head effects, and
    the layer-matched random sets' mean (band: their range over draws), or a note saying why there
    is no control.
    """
    points = [c for c in checkpoints if c.step >= 1]
    steps = [c.step for c in points]
    n_rows = 4 if ablation is None else 5
    titles = ("prefix matching (per head)", "copying (per head)", "ICL score", "loss",
              f"ICL score change, final induction heads {ablation.get('method', '')}-ablated" if ablation else "")
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.035 if n_rows == 4 else 0.03,
                        subplot_titles=titles[:n_rows])
    if points:
        final = {(h["layer"], h["head"]) for h in points[-1].heads if h["is_induction"]}
        heads = [(h["layer"], h["head"]) for h in points[0].heads]
        for i, (layer, head) in enumerate(heads):
            colour = PALETTE[i % len(PALETTE)]
            width = 3.0 if (layer, head) in final else 1.4
            for row, score in ((1, "prefix_matching"), (2, "copying")):
                values = [next(h[score] for h in c.heads if (h["layer"], h["head"]) == (layer, head)) for c in points]
                fig.add_trace(go.Scatter(
                    x=steps, y=values, mode="lines", name=f"L{layer}H{head}", legendgroup=f"L{layer}H{head}",
                    showlegend=row == 1, line=dict(color=colour, width=width, dash="solid" if layer % 2 else "dot"),
                    hovertemplate=f"L{layer}H{head}" + " step %{x}: %{y:.3f}<extra></extra>",
                ), row=row, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[c.icl_score for c in points], mode="lines+markers", name="ICL score",
                                 line=dict(color="#000", width=2), marker=dict(size=4), showlegend=False), row=3, col=1)
        if any(c.loss is not None for c in points):
            fig.add_trace(go.Scatter(x=steps, y=[c.loss for c in points], mode="lines", name="train loss (smoothed)",
                                     line=dict(color=PALETTE[1], width=2)), row=4, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[c.held_out_loss for c in points], mode="lines+markers", name="held-out loss",
                                 line=dict(color=PALETTE[0], width=2), marker=dict(size=4)), row=4, col=1)
    if ablation is not None:
        _ablation_panel(fig, points, ablation, row=5)
    pc = phase_change
    if pc is not None:
        fig.add_vrect(x0=pc.start_step, x1=pc.end_step, fillcolor="rgba(213,94,0,0.12)", line_width=0,
                      layer="below", row="all", col=1)
        fig.add_vline(x=pc.step, line=dict(color=PALETTE[3], width=1.5, dash="dash"), row="all", col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="training step (log scale)", row=n_rows, col=1)
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="score", range=[-1.05, 1.05], row=2, col=1)
    fig.update_yaxes(title_text="nats", row=3, col=1)
    fig.update_yaxes(title_text="nats/token", row=4, col=1)
    window = "" if pc is None else f" — phase change at step {pc.step} ({pc.start_step}-{pc.end_step})"
    return paper_layout(fig, width=COLUMN_WIDTH_PX + 200, height=900 if n_rows == 4 else 1120,
                        title=f"Induction-head formation — {name}{window}")


def _ablation_panel(fig: go.Figure, points: Sequence[CheckpointScores], ablation: dict, row: int) -> None:
    """`plot_formation`'s fifth panel (`track --ablate`): joint, summed single and control effects."""
    with_set = [c for c in points if c.induction_set is not None]
    heads = ", ".join(f"L{layer}H{h}" for layer, h in ablation.get("induction_heads") or [])
    fig.update_yaxes(title_text="Δ nats", row=row, col=1)
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=row, col=1)
    if not with_set:
        fig.add_annotation(text=ablation.get("control_unavailable") or "no induction heads to ablate", showarrow=False,
                           xref="x domain", yref="y domain", x=0.5, y=0.5, row=row, col=1)
        return
    steps = [c.step for c in with_set]
    sets = [c.induction_set for c in with_set]
    if ablation.get("control_heads"):
        lo = [s["control_min_effect"] for s in sets]
        hi = [s["control_max_effect"] for s in sets]
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(120,120,120,0.2)",
                                 line=dict(width=0), hoverinfo="skip", name="random heads (range)", showlegend=False),
                      row=row, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[s["control_mean_effect"] for s in sets], mode="lines",
                                 name=f"layer-matched random heads ({ablation.get('n_draws')} draws)",
                                 line=dict(color="#777", width=1.5)), row=row, col=1)
    else:
        note = "<br>".join(textwrap.wrap(str(ablation.get("control_unavailable") or "no control"), 80))
        fig.add_annotation(text=note, showarrow=False,
                           xref="x domain", yref="y domain", x=0.01, y=0.98, xanchor="left", yanchor="top",
                           font=dict(size=10), row=row, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[s["summed_single_effects"] for s in sets], mode="lines+markers",
                             name="sum of single-head effects", line=dict(color=PALETTE[1], width=2, dash="dot"),
                             marker=dict(size=4)), row=row, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[s["joint_effect"] for s in sets], mode="lines+markers",
                             name=f"joint ({heads})", line=dict(color=PALETTE[3], width=2.5), marker=dict(size=4)),
                  row=row, col=1)


def plot_mosaic(checkpoints: Sequence[CheckpointScores], phase_change: PhaseChange | None, name: str,
                n_panels: int = 6, score: str = "prefix_matching") -> go.Figure:
    """An induction "mosaic": the layer x head heatmap of `score` at up to `n_panels` checkpoints of a
    run (log-spaced over its steps, or bracketing its phase change: before, start, steepest point, end,
    last), side by side on one colour scale, induction heads outlined."""
    points = list(checkpoints)
    if not points:
        return paper_layout(go.Figure(), title="no checkpoints")
    chosen = _mosaic_checkpoints(points, phase_change, n_panels)
    n_layers = 1 + max(h["layer"] for h in chosen[0].heads)
    n_heads = 1 + max(h["head"] for h in chosen[0].heads)
    fig = make_subplots(rows=1, cols=len(chosen), subplot_titles=[f"step {c.step}" for c in chosen],
                        horizontal_spacing=0.02)
    signed = score in SIGNED_SCORES
    for col, c in enumerate(chosen, start=1):
        z = np.zeros((n_layers, n_heads))
        for h in c.heads:
            z[h["layer"], h["head"]] = h[score]
        fig.add_trace(go.Heatmap(z=z, zmin=-1.0 if signed else 0.0, zmax=1.0, colorscale="RdBu" if signed else "Viridis",
                                 reversescale=signed, showscale=col == len(chosen),
                                 colorbar=dict(title=dict(text=SCORE_LABELS.get(score, score), side="right"), thickness=10),
                                 hovertemplate="L%{y}H%{x}: %{z:.3f}<extra>step " + str(c.step) + "</extra>"),
                      row=1, col=col)
        for h in c.heads:
            if h["is_induction"]:
                fig.add_shape(type="rect", x0=h["head"] - 0.5, x1=h["head"] + 0.5, y0=h["layer"] - 0.5,
                              y1=h["layer"] + 0.5, line=dict(color="#000", width=2), row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(dtick=1, autorange="reversed", showticklabels=col == 1,
                         title_text="layer" if col == 1 else None, row=1, col=col)
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 150 * len(chosen) + 120), height=max(240, 45 * n_layers + 170),
                        title=f"Induction mosaic: {SCORE_LABELS.get(score, score)} over training — {name}")


def _mosaic_checkpoints(points: list[CheckpointScores], phase_change: PhaseChange | None, n_panels: int) -> list[CheckpointScores]:
    """Checkpoints nearest to log-spaced steps; around a phase change, its start, steepest point and end."""
    steps = np.array([max(c.step, 1) for c in points], dtype=float)
    if phase_change is not None:
        first, last = steps.min(), steps.max()
        targets = [first, np.sqrt(first * phase_change.start_step), phase_change.start_step, phase_change.step,
                   phase_change.end_step, last]
    else:
        targets = list(np.geomspace(steps.min(), steps.max(), num=n_panels))
    idx = sorted({int(np.argmin(np.abs(np.log(steps) - np.log(t)))) for t in targets[:n_panels]})
    return [points[i] for i in idx]


def plot_patching_comparison(exact: Tensor, attribution: Tensor, metric: str) -> go.Figure:
    """Attribution patching's estimate against exact activation patching, one point per head
    (`exact`, `attribution`: `[layer, head_index]` effects)."""
    x = exact.flatten().numpy()
    y = attribution.flatten().numpy()
    n_heads = exact.shape[1]
    labels = [f"L{i // n_heads}H{i % n_heads}" for i in range(len(x))]
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999", dash="dash", width=1), showlegend=False,
                   hoverinfo="skip"),
        go.Scatter(x=x, y=y, mode="markers+text", text=labels, textposition="top center", textfont=dict(size=9),
                   marker=dict(size=8, color=PALETTE[0]), showlegend=False,
                   hovertemplate="%{text}: exact %{x:.3f}, attribution %{y:.3f}<extra></extra>"),
    ])
    fig.update_xaxes(title_text=f"exact patching effect on {metric} (nats)")
    fig.update_yaxes(title_text="attribution estimate (nats)")
    return paper_layout(fig, title="Attribution patching vs exact activation patching")


def save_figures(figures: dict[str, go.Figure], directory: str | os.PathLike[str], formats: tuple[str, ...] = (".svg",)) -> dict[str, str]:
    """Write each figure as `<directory>/<name><fmt>` for every static format, in one kaleido session.

    Returns name -> problem for the figures that could not be written statically (empty when all
    were). HTML is not written here (see `save_figure` / the demo's index.html).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    problem = static_export_problem()
    if problem:
        return {name: problem for name in figures}
    chrome = _find_chrome()
    if chrome and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = chrome
    import plotly.io as pio

    jobs = [(name, fig, fmt) for name, fig in figures.items() for fmt in formats]
    tmps = [directory / f".{name}.tmp{fmt}" for name, _, fmt in jobs]
    try:
        pio.write_images([fig for _, fig, _ in jobs], [str(t) for t in tmps], format=[f.lstrip(".") for *_, f in jobs])
        for (name, _, fmt), tmp in zip(jobs, tmps):
            os.replace(tmp, directory / f"{name}{fmt}")
    except Exception as exc:  # kaleido/choreographer raise assorted errors when Chrome fails
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {name: f"static export failed ({message})" for name in figures}
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return {}


# ---- the method benchmark ------------------------------------------------------------------------


def plot_bench(models: Sequence[ModelBench], title: str) -> go.Figure:
    """Method x model heatmaps of recall and precision against the truth each method is scored on.

    Cells show the value and, in brackets, the rank of the method's last true head over the number
    of true heads (equal: the true heads come first). Blank cells: undefined (nothing named or nothing true).
    """
    methods = [s.method for s in models[0].methods]
    names = [m.name for m in models]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("recall", "precision"), horizontal_spacing=0.06)
    for col, what in enumerate(("recall", "precision"), start=1):
        z, text = [], []
        for method in methods:
            row, labels = [], []
            for m in models:
                s = m.method(method)
                value = getattr(s, what)
                row.append(np.nan if value is None else value)
                rank = "" if s.true_head_rank is None else f" [{s.true_head_rank}/{len(m.truth.heads(s.truth))}]"
                labels.append(("–" if value is None else f"{value:.2f}") + rank)
            z.append(row)
            text.append(labels)
        fig.add_trace(
            go.Heatmap(
                z=z, x=names, y=methods, zmin=0.0, zmax=1.0, colorscale="Viridis", text=text,
                texttemplate="%{text}", textfont=dict(size=10), showscale=col == 2,
                colorbar=dict(thickness=10, len=0.9), hovertemplate="%{y} on %{x}: %{text}<extra>" + what + "</extra>",
            ),
            row=1, col=col,
        )
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=1, col=col)
        fig.update_xaxes(tickangle=-30, row=1, col=col)
    width = max(2 * COLUMN_WIDTH_PX, 2 * 110 * len(names) + 300)
    fig = paper_layout(fig, width=width, height=max(380, 34 * len(methods) + 160), title=title)
    fig.update_layout(margin=dict(l=170, r=20, t=60, b=90))
    return fig


# ---- sweeps ----------------------------------------------------------------------------------------

def plot_sweep_tracks(labels: Sequence[str], runs: Sequence[Sequence[CheckpointScores]],
                      phases: Sequence[PhaseChange | None]) -> go.Figure:
    """Every run's best prefix-matching and ICL score against step (log axis), and the phase-change
    windows side by side (one row per run: the 10%-90% window, the steepest point marked)."""
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.38, 0.38, 0.24],
                        subplot_titles=("best prefix-matching (max over heads)", "ICL score", "phase change"))
    for i, (label, points) in enumerate(zip(labels, runs)):
        colour = PALETTE[i % len(PALETTE)]
        points = [c for c in points if c.step >= 1]
        steps = [c.step for c in points]
        fig.add_trace(go.Scatter(x=steps, y=[c.best_prefix_matching for c in points], mode="lines+markers", name=label,
                                 legendgroup=label, line=dict(color=colour, width=2), marker=dict(size=4)), row=1, col=1)
        if all(c.icl_score is not None for c in points):
            fig.add_trace(go.Scatter(x=steps, y=[c.icl_score for c in points], mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=False, line=dict(color=colour, width=2),
                                     marker=dict(size=4)), row=2, col=1)
        pc = phases[i]
        if pc is not None:
            fig.add_trace(go.Scatter(x=[pc.step], y=[label], mode="markers", showlegend=False, legendgroup=label,
                                     marker=dict(color=colour, size=10, symbol="diamond"),
                                     error_x=dict(type="data", symmetric=False, array=[pc.end_step - pc.step],
                                                  arrayminus=[pc.step - pc.start_step], color=colour, thickness=2),
                                     hovertemplate=f"{label}: step {pc.step} ({pc.start_step}-{pc.end_step})<extra></extra>"),
                          row=3, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="training step (log scale)", row=3, col=1)
    fig.update_yaxes(title_text="attention", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=2, col=1)
    fig.update_yaxes(type="category", categoryarray=list(labels), row=3, col=1)
    return paper_layout(fig, width=COLUMN_WIDTH_PX + 200, height=760 + 20 * len(labels),
                        title=f"Induction-head formation across {len(labels)} runs")


def plot_sweep_scans(labels: Sequence[str], scores: Sequence[HeadScores], icl: Sequence[float | None]) -> go.Figure:
    """Each model's best prefix-matching score and ICL score, side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("best prefix-matching", "ICL score"), horizontal_spacing=0.15)
    fig.add_trace(go.Bar(x=list(labels), y=[float(s.prefix_matching.max()) for s in scores], marker_color=PALETTE[0],
                         showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=list(labels), y=[float("nan") if v is None else v for v in icl], marker_color=PALETTE[1],
                         showlegend=False), row=1, col=2)
    fig.update_yaxes(title_text="attention", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="nats", row=1, col=2)
    return paper_layout(fig, width=max(COLUMN_WIDTH_PX, 90 * len(labels) + 300), title="Models compared")
