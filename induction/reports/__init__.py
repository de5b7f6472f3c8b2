"""Reports: the objects that the CLI prints, notebooks display and figures read (one module per report).

`base` holds what they share (the `Report` protocol, provenance, `format_report`); each other module
is one subcommand's report. Jobs build them; compute modules never import them.
"""
from __future__ import annotations

from induction.common.provenance import package_versions, provenance
from induction.reports.base import (
    FORMATS,
    Report,
    display_name,
    format_report,
    head_sort_key,
    to_dataframe,
)
from induction.reports.bench import BenchReport
from induction.reports.effects import HeadEffectReport
from induction.reports.fewshot import FewShotReport
from induction.reports.scan import ScanReport, circuit_text, copying_method_line
from induction.reports.sweep import SweepReport
from induction.reports.track import TrackReport
from induction.reports.train import TrainReport

__all__ = [
    "FORMATS",
    "Report",
    "package_versions",
    "provenance",
    "head_sort_key",
    "to_dataframe",
    "format_report",
    "display_name",
    "ScanReport",
    "circuit_text",
    "copying_method_line",
    "TrackReport",
    "HeadEffectReport",
    "FewShotReport",
    "TrainReport",
    "BenchReport",
    "SweepReport",
]
