"""Figures, drawn from the same report objects as the tables (`Report.plot()`), in one style.

`style` (palette, fonts, sizes, the head heatmap) and `export` (HTML, and .png/.svg/.pdf through
kaleido) are shared; each other module draws one report's figures from its typed contents, so it
imports no report and no job, and compute modules never import it.
"""
from __future__ import annotations

from induction.plots.bench import plot_bench
from induction.plots.effects import plot_effects, plot_patching_comparison
from induction.plots.export import (
    FIGURE_FORMATS,
    STATIC_FORMATS,
    PlotExportError,
    save_figure,
    save_figures,
    static_export_problem,
)
from induction.plots.fewshot import (
    plot_fewshot,
    plot_fewshot_ablation,
    plot_function_vectors,
    plot_head_attribution,
    plot_task_probs,
)
from induction.plots.paths import plot_paths
from induction.plots.patterns import PatternView, pattern_view_html, save_pattern_view, show_patterns
from induction.plots.scan import plot_scan, prefix_copying_scatter
from induction.plots.style import (
    COLUMN_WIDTH_PX,
    DPI,
    FONT,
    LABEL_VARIANT_NAMES,
    PALETTE,
    SCORE_LABELS,
    SIGNED_SCORES,
    STYLES,
    VENUES,
    FigureStyle,
    apply_style,
    figure_style,
    head_heatmap,
    paper_layout,
)
from induction.plots.sweep import plot_sweep_scans, plot_sweep_tracks
from induction.plots.track import plot_formation, plot_mosaic

__all__ = [
    "PALETTE",
    "FONT",
    "COLUMN_WIDTH_PX",
    "SCORE_LABELS",
    "SIGNED_SCORES",
    "paper_layout",
    "FigureStyle",
    "apply_style",
    "figure_style",
    "STYLES",
    "VENUES",
    "DPI",
    "head_heatmap",
    "LABEL_VARIANT_NAMES",
    "STATIC_FORMATS",
    "FIGURE_FORMATS",
    "PlotExportError",
    "save_figure",
    "static_export_problem",
    "save_figures",
    "plot_scan",
    "prefix_copying_scatter",
    "plot_formation",
    "plot_mosaic",
    "plot_effects",
    "plot_patching_comparison",
    "plot_paths",
    "plot_fewshot",
    "plot_fewshot_ablation",
    "plot_task_probs",
    "plot_function_vectors",
    "plot_head_attribution",
    "plot_bench",
    "plot_sweep_tracks",
    "plot_sweep_scans",
    "show_patterns",
    "PatternView",
    "pattern_view_html",
    "save_pattern_view",
]
