"""`induction scan`'s report: every head's scores and the model's ICL score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from induction.heads.implied import ImpliedCircuit
from induction.heads.offsets import MIN_SHIFT
from induction.heads.patterns import HeadPatterns
from induction.heads.records import HeadScores, HeadTable
from induction.measures.icl import ICLScore
from induction.reports import columns as cols
from induction.reports.base import _flat, display_name, head_sort_key, to_dataframe


@dataclass
class ScanReport:
    """`induction scan`: every head's scores and the model's ICL score.

    `circuits`: for each shifted induction head with a layer below it, the layer-below heads its
    offset implies (`induction.heads.offsets.implied_circuit`). `patterns`: the attention patterns
    of the heads `ScanConfig.patterns` names, on the detector's first prompts (None: none asked for).
    """

    model: str
    checkpoint: Any
    scores: HeadScores
    icl: ICLScore | None
    provenance: dict[str, Any] = field(default_factory=dict)
    circuits: list[ImpliedCircuit] = field(default_factory=list)
    patterns: HeadPatterns | None = None

    title = "Head scores"
    columns = cols.SCAN  # the head record's fields: "layer", "head", *SCORE_NAMES, then the flags and offsets
    default_columns = cols.DEFAULT_COLUMNS["scan"]

    def heads(self) -> HeadTable:
        return self.scores.table()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "icl_score": None if self.icl is None else self.icl.score,
            "icl": None if self.icl is None else self.icl.to_dict(),
            "induction_heads": [list(lh) for lh in self.scores.induction_heads()],
            "shifted_induction_heads": [list(lh) for lh in self.scores.shifted_induction_heads()],
            "offsets": {"scored": list(self.scores.scored_offsets()),
                        "requested": [self.scores.config.min_offset, self.scores.config.max_offset],
                        "min_support": self.scores.config.offset_support},
            "implied_circuits": [c.to_dict() for c in self.circuits],
            "thresholds": {
                "prefix_matching": self.scores.config.prefix_threshold,
                "copying": self.scores.config.copying_threshold,
            },
            "copying_estimate": self.scores.copying_method,
            "heads": self.heads(),
            **({"patterns": self.patterns.to_dict()} if self.patterns is not None else {}),
            "provenance": self.provenance,
        }

    def rows(self) -> list[dict[str, Any]]:
        return sorted((_flat(rec, self.columns) for rec in self.heads()), key=head_sort_key)

    def summary(self) -> list[str]:
        heads = self.scores.induction_heads()
        names = ", ".join(f"L{lh[0]}H{lh[1]}" for lh in heads) or "none"
        lines = [f"model: {self.model}" + (f" (checkpoint {self.checkpoint})" if self.checkpoint is not None else "")]
        lines.append(
            f"induction heads: {names}  (prefix_matching >= {self.scores.config.prefix_threshold}, "
            f"copying >= {self.scores.config.copying_threshold})"
        )
        lines += self.shifted_lines()
        lines.append(copying_method_line(self.scores.copying_method, float(self.scores.copying_se.max())))
        if self.patterns is not None:
            lines.append(patterns_line(self.patterns))
        if self.icl is not None:
            ci = f" [95% CI {self.icl.ci[0]:.3f}, {self.icl.ci[1]:.3f}]" if self.icl.ci else ""
            lines.append(
                f"ICL score: {self.icl.score:.3f}{ci}  (loss at token {self.icl.late_pos} minus token "
                f"{self.icl.early_pos}; {self.icl.data})"
            )
        return lines

    def shifted_lines(self) -> list[str]:
        """The shifted induction heads with their offsets, each one's implied circuit, and the offsets
        the prompts could not score (when they cut the requested range short)."""
        s = self.scores
        heads = s.shifted_induction_heads()
        names = ", ".join(f"L{lh[0]}H{lh[1]} (d={int(s.induction_offset[lh])}, {float(s.offset_prefix_matching[lh]):.2f})"
                          for lh in heads) or "none"
        lines = [f"shifted induction heads (d >= {MIN_SHIFT}): {names}  (offset_prefix_matching >= "
                 f"{s.config.prefix_threshold}, offset_copying >= {s.config.copying_threshold})"]
        circuits = {(c.layer, c.head): c for c in self.circuits}
        for lh in heads:
            c = circuits.get(lh)
            if c is None:
                lines.append(f"  L{lh[0]}H{lh[1]}: no layer below it, so no implied circuit")
                continue
            lines.append(f"  L{lh[0]}H{lh[1]} d={c.offset}: implies " + circuit_text(c))
        scored, cfg = s.scored_offsets(), s.config
        if scored and (scored[0] > cfg.min_offset or scored[-1] < cfg.max_offset):
            lines.append(f"offsets scored: {scored[0]}..{scored[-1]} of {cfg.min_offset}..{cfg.max_offset} (an offset "
                         f"needs a period longer than it in {cfg.offset_support:.0%} of the prompts: --max-period, --seq-len)")
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def show_patterns(self, title: str | None = None):
        """The attention-pattern viewer of the heads `ScanConfig.patterns` named (Jupyter displays it;
        `.save(path)` writes a page). For other heads: `induction.plots.show_patterns(model, heads)`."""
        from induction.plots.patterns import PatternView

        if self.patterns is None:
            raise ValueError("patterns: this scan kept no attention patterns; name heads in ScanConfig.patterns")
        return PatternView(self.patterns, title if title is not None else f"Attention patterns — {display_name(self.model)}")

    def plot(self, kind: str = "heatmap", style=None):
        """``heatmap`` (prefix-matching and copying), ``scatter`` (Olsson et al.), or one score's name.
        `style`: "paper" for a paper's column width and type (`induction.plots.FigureStyle`)."""
        from induction import plots

        cfg = self.scores.config
        fig = plots.plot_scan(self.heads(), name=display_name(self.model), kind=kind,
                              prefix_threshold=cfg.prefix_threshold, copying_threshold=cfg.copying_threshold)
        return plots.apply_style(fig, style)


def circuit_text(c: ImpliedCircuit) -> str:
    """One line: the heads an offset-d head's key, query and value read, by attention lag and by composition."""
    def heads(hs) -> str:
        return ", ".join(f"L{layer}H{h}" for layer, h in hs)

    lags = {(b.layer, b.head): b.lag for b in c.below}

    def by_lag(hs, none: str) -> str:
        return ", ".join(f"L{layer}H{h} (lag {lags[(layer, h)]})" for layer, h in hs) or none

    def comp(h) -> str:
        return "-" if h is None else heads([h])

    return (f"key {by_lag(c.key_by_lag, '?')}, query {by_lag(c.query_by_lag, 'the token itself')}, value "
            f"{by_lag(c.value_by_lag, 'the token itself')} (by attention lag: c_K - c_Q = {c.offset}, c_V = "
            f"{c.offset - 1}); by composition K {comp(c.key_by_composition)}, Q {comp(c.query_by_composition)}, "
            f"V {comp(c.value_by_composition)}")


def patterns_line(p: HeadPatterns) -> str:
    """One line: each chosen head's attention on the induction stripe of the shown prompts."""
    heads = ", ".join(f"L{layer}H{h} {float(p.stripe[i].mean()):.3f}" for i, (layer, h) in enumerate(p.heads))
    return (f"attention on the induction stripe (prompts 1-{p.tokens.shape[0]}, queries with an earlier "
            f"occurrence): {heads}")


def copying_method_line(method: dict[str, Any], max_se: float | None = None) -> str:
    """One line saying how the copying score was computed (`ScoreConfig.copying_method`)."""
    if method.get("method") != "sampled":
        return "copying: exhaustive (every source scored)"
    line = (f"copying: estimated from {method['sources_per_prompt']} sources per prompt and head, drawn by attention "
            f"(seed {method['seed']}); copying_se = its sampling standard error")
    return line + (f" (largest {max_se:.3f})" if max_se is not None else "")
