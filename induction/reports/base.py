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
from induction.reports import columns as table_columns

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


def format_report(report: Report, fmt: str = "table", width: int | None = None,
                  columns: str | Sequence[str] | None = None) -> str:
    """Render a report as table (rich), json, csv or markdown.

    Args:
        report: any report (`Report`).
        fmt: one of `FORMATS`.
        width: the table's width in characters (default: the terminal's, 100 when stdout is not one).
        columns: the table's and markdown's columns: None (a table shows the report's
            `default_columns`, short headers and a legend, fitting 100 characters; markdown shows
            every column), "all", or names (full or short). JSON and CSV always keep every field
            under its full name.
    """
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
        cols = shown_columns(report, columns if columns is not None else "all")
        lines = [f"## {report.title}", ""] + [f"- {line}" for line in report.summary()] + [""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        return _rich_table(report, rows, shown_columns(report, columns), width, fit=columns is None)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def shown_columns(report: Report, columns: str | Sequence[str] | None = None) -> list[str]:
    """The columns a table of `report` shows: its `default_columns` (those it has) unless `columns`
    is "all" or names them (full names or short headers, `induction.reports.columns.HEADERS`)."""
    available = tuple(report.columns)
    if columns == "all":
        return list(available)
    if columns is None:
        default = getattr(report, "default_columns", None) or available
        return [c for c in default if c in available]
    names = [columns] if isinstance(columns, str) else list(columns)
    return list(table_columns.resolve(names, available))


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


def _rich_table(report: Report, rows: list[dict[str, Any]], cols: list[str], width: int | None, fit: bool) -> str:
    import shutil

    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()  # colour (induction heads bold green, shifted ones bold yellow) only on a terminal
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns if tty else 100
    table = Table(title=report.title, title_justify="left")
    for c in cols:
        name = table_columns.header(c)
        table.add_column(name, justify="left" if c in _LEFT else "right", min_width=len(name), overflow="fold")
    for row in rows:
        style = "bold green" if row.get("is_induction") else ("bold yellow" if row.get("is_shifted_induction") else None)
        table.add_row(*(_cell(row.get(c)) for c in cols), style=style)
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=tty, color_system="standard" if tty else None)
    natural = console.measure(table).maximum
    if natural > width and not fit:
        # Columns asked for by name are shown whole: the table is as wide as it needs to be.
        console = Console(file=buf, width=natural, force_terminal=tty, color_system="standard" if tty else None)
    console.print(table)
    text_console = Console(file=buf, width=width, force_terminal=tty, color_system="standard" if tty else None)
    legend = table_columns.legend(cols)
    if legend:
        text_console.print(f"legend: {legend}", highlight=False)
    for line in report.summary():
        text_console.print(line, highlight=False)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())  # no padding to the width


_LEFT = ("layer", "head", "is_induction", "is_shifted_induction", "method", "model", "truth", "run", "labels",
         "best_head", "path", "task_probs")


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]"


def _heads(heads: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"L{layer}H{h}" for layer, h in heads)


def display_name(spec: Any) -> str:
    """A short name for figure titles: the last path component of a spec."""
    from pathlib import Path

    return Path(str(spec)).name or str(spec)
