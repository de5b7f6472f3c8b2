"""The demo's pages: DIR/index.html (interactive, offline) and DIR/report.md.

Both open with the summary (`induction.reports.summary`): the few numbers that matter, each with its
interval and one sentence. Then, in index.html, the attention patterns (each scan heatmap linked to a
viewer of its heads' patterns on the scan's prompts, and the induction heads' patterns over the
training checkpoints with a slider), the other figures, and the raw key numbers behind a disclosure.
Every figure takes the page's width (`induction.plots.page.figure_div`); nothing loads from the network.
"""

from __future__ import annotations

import html
import json
from typing import Any, Callable

CAPTIONS = {
    "scan_2l": "Head scores of the default 2-layer model; induction heads outlined.",
    "scatter_2l": "Prefix matching vs copying per head (Olsson et al. 2022); the shaded corner is the detector's induction region.",
    "scan_1l": "Head scores of the 1-layer control: no head can prefix-match without an earlier previous-token head.",
    "formation_2l": "Formation over training (log steps): per-head scores, ICL score and loss; the phase change is shaded.",
    "formation_1l": "The 1-layer control over training: no phase change.",
    "mosaic_2l": "Prefix matching of every head at log-spaced checkpoints.",
    "ablate_zero": "Change in the ICL score when each head is zero-ablated (positive: worse in-context learning).",
    "ablate_mean": "The same with mean ablation.",
    "patch_exact": "Activation patching: each head's clean output patched into a run without repeats.",
    "patch_vs_attribution": "Attribution patching against exact patching, one point per head.",
    "fewshot": "Few-shot lookup accuracy vs number of demonstrations, per label manipulation.",
    "fewshot_ablation": "Lookup accuracy with the detected induction heads ablated vs layer-matched random heads.",
}

FIGURE_DATA = {"scatter_2l": "scan_2l", "mosaic_2l": "track_2l", "formation_2l": "track_2l",
               "formation_1l": "track_1l", "patch_vs_attribution": "patch_attribution", "fewshot_ablation": "fewshot"}

LINKED = {"scan_2l": "patterns_2l", "scan_1l": "patterns_1l"}
"""Heatmap figure -> the pattern viewer its cells select."""

_CSS = ("body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
        "line-height:1.4}figure{margin:1.5em 0}figcaption{color:#555;font-size:.95em}pre{background:#f6f6f6;"
        "padding:1em;overflow-x:auto}.finding{margin:.8em 0;padding:.5em .8em;border-left:4px solid #0072B2;"
        "background:#f7fafc}.finding .value{font-size:1.15em;font-weight:bold}.finding .interval{color:#444}"
        ".finding .src{color:#777;font-size:.9em}details{margin:2em 0}summary{cursor:pointer;font-weight:bold}")


def json_for(figure: str) -> str:
    """The report file a figure is drawn from."""
    return FIGURE_DATA.get(figure, figure) + ".json"


def findings(reports: dict[str, Any]):
    """The summary's findings (`induction.reports.summary.demo_findings`) of the demo's reports."""
    from induction.reports.summary import demo_findings

    return demo_findings({name: report.to_json() for name, report in reports.items()})


def summary_html(findings) -> str:
    items = []
    for f in findings:
        src = ", ".join(f"<a href='{html.escape(s)}'>{html.escape(s)}</a>" for s in f.sources)
        items.append(f"<div class='finding' id='finding-{f.key}'><div><b>{html.escape(f.title)}:</b> "
                     f"<span class='value'>{html.escape(f.value)}</span> <span class='interval'>"
                     f"({html.escape(f.interval)})</span></div><div>{html.escape(f.sentence)} "
                     f"<span class='src'>[{src}]</span></div></div>")
    return "<section id='summary'><h2>Summary</h2>" + "".join(items) + "</section>"


def index_html(figures: dict[str, Any], reports: dict[str, Any], result: Any,
               views: dict[str, str]) -> str:
    """index.html: summary, attention patterns (heatmaps linked to viewers), figures, raw numbers.

    `views`: viewer id -> its HTML fragment (`induction.plots.patterns.pattern_view_html`), placed
    after the heatmap that links to it (`LINKED`) or, unlinked, at the end of the patterns section.
    """
    from induction.plots.page import figure_div, heatmap_link_script

    first = [True]

    def figure(name: str) -> str:
        div = figure_div(figures[name], f"fig-{name}", include_plotlyjs=first[0])
        first[0] = False
        click = " Click a head to see its attention pattern below." if name in LINKED else ""
        return (f"<figure id='{name}'>{div}<figcaption>{html.escape(CAPTIONS.get(name, name))}{click} "
                f"(<a href='{json_for(name)}'>data</a>)</figcaption></figure>")

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>induction demo</title>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<style>{_CSS}</style></head><body><h1>induction demo</h1>",
             summary_html(findings(reports)),
             "<section id='patterns'><h2>Attention patterns</h2><p>Each head's attention on the scan's own "
             "prompts (repeated random tokens): queries are rows, keys columns; an induction head draws a "
             "stripe P&nbsp;-&nbsp;1 positions behind the diagonal once the segment repeats (orange lines).</p>"]
    for fig_name, view_id in LINKED.items():
        if fig_name in figures:
            parts.append(figure(fig_name))
        if view_id in views:
            parts.append(views[view_id])
            if fig_name in figures:
                parts.append(heatmap_link_script(f"fig-{fig_name}", view_id, "the demo keeps every head's pattern"))
    parts += [frag for view_id, frag in views.items() if view_id not in LINKED.values()]
    parts.append("</section><section id='figures'><h2>Figures</h2>")
    parts += [figure(name) for name in figures if name not in LINKED]
    reports_links = " ".join(f"<a href='{n}.json'>{n}.json</a>" for n in [*reports, "demo"])
    parts.append("</section><details id='raw'><summary>Raw numbers (JSON)</summary>"
                 f"<p>Runtime {result.runtime_s:.0f} s. Every report: {reports_links}</p>"
                 f"<pre>{html.escape(json.dumps(result.key_numbers, indent=2))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_md(findings) -> list[str]:
    lines = ["## Summary", ""]
    for f in findings:
        lines.append(f"- **{f.title}: {f.value}** ({f.interval}). {f.sentence} "
                     f"({', '.join(f'`{s}`' for s in f.sources)})")
    return lines + [""]


def report_md(reports: dict[str, Any], figures: dict[str, Any], result: Any,
              format_report: Callable[[Any, str], str]) -> str:
    """report.md: the summary first, then the key numbers in full, the figures and every table."""
    k = result.key_numbers
    lines = ["# induction demo", "", *summary_md(findings(reports)),
             "Every number is read from the JSON report named beside it; the interactive figures and the "
             "attention-pattern viewer are in `index.html`.", "", "## Key numbers", ""]
    for name in ("2l", "1l"):
        pc = k[f"{name}_phase_change"]
        pc_text = "none" if pc is None else f"step {pc['step']} (window {pc['start_step']}-{pc['end_step']})"
        lines.append(f"- **{name}**: induction heads {', '.join(k[f'{name}_induction_heads']) or 'none'}; best prefix-matching "
                     f"{k[f'{name}_best_prefix_matching']:.3f}; ICL score {k[f'{name}_icl_score']:.3f}; phase change {pc_text} "
                     f"(`scan_{name}.json`, `track_{name}.json`)")
    for method in ("zero", "mean"):
        top = k[f"ablate_{method}_top"]
        line = f"- {method} ablation: largest effect {top['head']} ({top['effect']:+.3f} nats on the ICL score)"
        ctrl = k.get(f"ablate_{method}_induction_vs_random")
        if ctrl:
            line += (f"; {ctrl['heads']} together {ctrl['induction_effect']:+.3f} vs layer-matched random heads "
                     f"{ctrl['random_effect']:+.3f} [95% CI {ctrl['random_effect_ci'][0]:+.3f}, {ctrl['random_effect_ci'][1]:+.3f}; "
                     f"{ctrl['distinct_random_sets']} distinct set(s)]")
        lines.append(line + f" (`ablate_{method}.json`)")
    lines.append(f"- attribution vs exact patching: Spearman {k['patch_rank_correlation']:.3f} over heads "
                 "(`patch_exact.json`, `patch_attribution.json`)")
    if "fewshot_lookup_accuracy" in k:
        acc = k["fewshot_lookup_accuracy"]
        lines.append("- few-shot lookup accuracy: " + ", ".join(f"{key} {v:.2f}" for key, v in acc.items()) + " (`fewshot.json`)")
    if "fewshot_ablation" in k:
        a = k["fewshot_ablation"]
        lines.append(f"- ablating {', '.join(a['top'])}: lookup accuracy {a['baseline']:.2f} -> {a['top_heads']:.2f}; "
                     f"layer-matched random heads -> {a['random_heads']:.2f} (`fewshot.json`)")
    lines += ["", "## Figures", ""]
    if result.static_problems:
        lines += [f"Static figures were not written: {next(iter(result.static_problems.values()))}. "
                  "The interactive figures are in `index.html`.", ""]
    for name in figures:
        lines += [f"### {CAPTIONS.get(name, name)}", ""]
        if name not in result.static_problems:
            lines += [f"![{name}](figures/{name}.svg)", ""]
    lines += ["## Tables", ""]
    for name, report in reports.items():
        lines += [format_report(report, "markdown").replace("## ", f"### {name}: ", 1), ""]
    return "\n".join(lines)
