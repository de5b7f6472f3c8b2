"""Reports: the objects that the CLI prints, notebooks display and figures read.

Every report is a plain dataclass with
- `to_json()`: the CONTRACT's JSON dict (with "provenance"),
- `rows()`: the table rows (list of flat dicts), `columns`, `title`, `summary()`,
- `to_dataframe()`: `rows()` as a pandas DataFrame,
- `plot()`: its figure (plotly), from `induction.plots`.
`format_report(report, fmt)` renders any of them as table | json | csv | markdown, so every number
has one source.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from induction.fileio import json_default
from induction.icl import ICLScore
from induction.scores import SCORE_NAMES, HeadScores

FORMATS = ("table", "json", "csv", "markdown")


@runtime_checkable
class Report(Protocol):
    title: str
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, Any]: ...
    def rows(self) -> list[dict[str, Any]]: ...
    def summary(self) -> list[str]: ...


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("induction-toolkit", "torch", "transformer-lens", "transformers", "numpy", "einops", "plotly"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(
    model_spec: str | None,
    checkpoint: Any = None,
    seed: int | None = None,
    settings: dict[str, Any] | None = None,
    runtime_s: float | None = None,
) -> dict[str, Any]:
    """What every report records about how it was made."""
    return {
        "versions": package_versions(),
        "model": model_spec,
        "checkpoint": checkpoint,
        "seed": seed,
        "settings": settings or {},
        "runtime_s": None if runtime_s is None else round(runtime_s, 3),
        "command": " ".join(["induction", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("induction") else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
    }


def head_sort_key(rec: dict[str, Any]) -> tuple:
    """Induction heads first, then by prefix-matching score, strongest first."""
    return (not rec.get("is_induction", False), -rec.get("prefix_matching", 0.0), rec["layer"], rec["head"])


@dataclass
class ScanReport:
    """`induction scan`: every head's scores and the model's ICL score."""

    model: str
    checkpoint: Any
    scores: HeadScores
    icl: ICLScore | None
    provenance: dict[str, Any] = field(default_factory=dict)

    title = "Head scores"
    columns = ("layer", "head", *SCORE_NAMES, "is_induction")

    def heads(self) -> list[dict[str, Any]]:
        return self.scores.to_records()

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "checkpoint": self.checkpoint,
            "icl_score": None if self.icl is None else self.icl.score,
            "icl": None if self.icl is None else self.icl.to_dict(),
            "induction_heads": [list(lh) for lh in self.scores.induction_heads()],
            "thresholds": {
                "prefix_matching": self.scores.config.prefix_threshold,
                "copying": self.scores.config.copying_threshold,
            },
            "heads": self.heads(),
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
        if self.icl is not None:
            ci = f" [95% CI {self.icl.ci[0]:.3f}, {self.icl.ci[1]:.3f}]" if self.icl.ci else ""
            lines.append(
                f"ICL score: {self.icl.score:.3f}{ci}  (loss at token {self.icl.late_pos} minus token "
                f"{self.icl.early_pos}; {self.icl.data})"
            )
        return lines

    def to_dataframe(self):
        return to_dataframe(self)

    def plot(self, kind: str = "heatmap"):
        from induction import plots

        return plots.plot_scan(self, kind=kind)


def _flat(rec: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    return {c: rec.get(c) for c in columns}


def to_dataframe(report: Report):
    import pandas as pd

    return pd.DataFrame(report.rows(), columns=list(report.columns))


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return ""
    return str(value)


def format_report(report: Report, fmt: str = "table", width: int | None = None) -> str:
    """Render a report as table (rich), json, csv or markdown."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, default=json_default) + "\n"
    rows = report.rows()
    cols = list(report.columns)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in cols})
        return buf.getvalue()
    if fmt == "markdown":
        lines = [f"## {report.title}", ""] + [f"- {line}" for line in report.summary()] + [""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        return _rich_table(report, rows, cols, width)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _rich_table(report: Report, rows: list[dict[str, Any]], cols: list[str], width: int | None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=report.title, title_justify="left")
    for c in cols:
        table.add_column(c, justify="left" if c in ("layer", "head", "is_induction", "method") else "right")
    for row in rows:
        style = "bold green" if row.get("is_induction") else None
        table.add_row(*(_cell(row.get(c)) for c in cols), style=style)
    buf = io.StringIO()
    tty = sys.stdout.isatty()  # colour (induction heads in bold green) only on a terminal
    console = Console(file=buf, width=width or 160, force_terminal=tty, color_system="standard" if tty else None)
    console.print(table)
    for line in report.summary():
        console.print(line, highlight=False, soft_wrap=True)
    return buf.getvalue()
