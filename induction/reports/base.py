"""What every report shares: the Report protocol, provenance, and rendering as table | json | csv | markdown.

Every report is a plain dataclass with `to_json()` (the CONTRACT's JSON dict, with "provenance"),
`rows()` and `columns` (the table), `title`, `summary()`, `to_dataframe()` and `plot()` (its figure,
drawn by `induction.plots` from the report's contents). `format_report(report, fmt)` renders any of
them, so every number has one source. The jobs (`induction.jobs`) build reports; compute modules
return plain results and never import the reports.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from typing import Any, Protocol, Sequence, runtime_checkable

from induction.common.fileio import json_default

FORMATS = ("table", "json", "csv", "markdown")


@runtime_checkable
class Report(Protocol):
    title: str
    columns: tuple[str, ...]

    def to_json(self) -> dict[str, Any]: ...
    def rows(self) -> list[dict[str, Any]]: ...
    def summary(self) -> list[str]: ...


def head_sort_key(rec: dict[str, Any]) -> tuple:
    """Induction heads first, then by prefix-matching score, strongest first."""
    return (not rec.get("is_induction", False), -rec.get("prefix_matching", 0.0), rec["layer"], rec["head"])


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
    if fmt == "json":  # strict JSON: a number that is not finite (unmeasured, diverged) is null
        return json.dumps(_finite_json(report.to_json()), indent=2, default=json_default, allow_nan=False) + "\n"
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


def _finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (tensor and numpy scalars included) replaced by None."""
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # tensors and numpy arrays or scalars
        return _finite_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _rich_table(report: Report, rows: list[dict[str, Any]], cols: list[str], width: int | None) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=report.title, title_justify="left")
    for c in cols:
        table.add_column(c, justify="left" if c in ("layer", "head", "is_induction", "is_shifted_induction", "method") else "right")
    for row in rows:
        style = "bold green" if row.get("is_induction") else ("bold yellow" if row.get("is_shifted_induction") else None)
        table.add_row(*(_cell(row.get(c)) for c in cols), style=style)
    buf = io.StringIO()
    tty = sys.stdout.isatty()  # colour (induction heads bold green, shifted ones bold yellow) only on a terminal
    console = Console(file=buf, width=width or 160, force_terminal=tty, color_system="standard" if tty else None)
    console.print(table)
    for line in report.summary():
        console.print(line, highlight=False, soft_wrap=True)
    return buf.getvalue()


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]"


def _heads(heads: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"L{layer}H{h}" for layer, h in heads)


def display_name(spec: Any) -> str:
    """A short name for figure titles: the last path component of a spec."""
    from pathlib import Path

    return Path(str(spec)).name or str(spec)
