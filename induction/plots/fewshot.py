"""Figures of few-shot accuracy, its ablation, task probabilities, function vectors, head attribution."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from induction.measures.fewshot.ablation import FewShotAblation, HeadAttribution
from induction.measures.fewshot.evaluate import ShotResult
from induction.measures.fewshot.vectors import ZERO_SHOT_FORMS, FunctionVectors
from induction.plots.style import COLUMN_WIDTH_PX, LABEL_VARIANT_NAMES, PALETTE, paper_layout


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
