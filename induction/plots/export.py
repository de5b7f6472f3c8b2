"""Writing figures: HTML always; .png/.svg/.pdf through kaleido and a Chrome binary, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

from induction.common.fileio import output_file

STATIC_FORMATS = (".png", ".svg", ".pdf")


FIGURE_FORMATS = (".html", *STATIC_FORMATS)


class PlotExportError(RuntimeError):
    """A figure format that cannot be written on this machine (message says how to enable it)."""


def save_figure(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` to .html (always works) or .png/.svg/.pdf (needs kaleido + Chrome/Chromium).

    Written to a temporary file and renamed (through a link, to its target), so a failed export
    leaves nothing behind; a character device or /dev/stdout is written in place
    (`induction.common.fileio.output_file`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise PlotExportError(f"cannot write a figure to {path.name}: use one of {', '.join(FIGURE_FORMATS)}")
    if not path.parent.exists():
        raise PlotExportError(f"cannot write {path}: directory {path.parent} does not exist")
    with output_file(path, suffix=suffix) as tmp:
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
        # Sizes passed explicitly: write_images draws every figure at kaleido's 700 x 500 default otherwise.
        pio.write_images([fig for _, fig, _ in jobs], [str(t) for t in tmps], format=[f.lstrip(".") for *_, f in jobs],
                         width=[fig.layout.width for _, fig, _ in jobs], height=[fig.layout.height for _, fig, _ in jobs])
        for (name, _, fmt), tmp in zip(jobs, tmps):
            os.replace(tmp, directory / f"{name}{fmt}")
    except Exception as exc:  # kaleido/choreographer raise assorted errors when Chrome fails
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {name: f"static export failed ({message})" for name in figures}
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return {}
