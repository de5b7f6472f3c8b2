"""Terminal tables fit 100 columns: every report type, default columns, short headers with a legend.

Each report is built by its real job on a tiny model (the hand-built induction model, a 12-step
run, the hand-built few-shot model, one small bench model), then rendered with `width=100`.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from helpers import build_fewshot_hand_model, build_induction_model

from induction import jobs
from induction.heads.scores import ScoreConfig
from induction.inputs.prompts import RepeatedTokensConfig
from induction.loading.runs import read_manifest
from induction.measures.icl import ICLConfig
from induction.reports import SweepReport, TrainReport, format_report
from induction.reports import columns as table_columns
from induction.reports.base import shown_columns
from induction.training.train import TrainConfig, train

# Headers a reader understands without a legend entry; every other header shown must be in the legend.
SELF_EXPLANATORY = {"layer", "head", "step", "loss", "run", "model", "method", "truth", "labels", "k", "value",
                    "effect", "precision", "recall", "path"}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    quick_scan = jobs.ScanConfig(detector=ScoreConfig(prompts=RepeatedTokensConfig(n_prompts=8), n_bootstrap=0),
                                 icl=ICLConfig(n_sequences=8, n_bootstrap=0))
    model = build_induction_model()
    run = train(TrainConfig.from_flat(d_model=32, n_ctx=32, d_vocab=32, batch_size=4, steps=12, n_log_checkpoints=3,
                                      checkpoint_every=10), tmp_path_factory.mktemp("run") / "run", progress=False)
    track = jobs.track(run, jobs.TrackConfig(scan=quick_scan, held_out_sequences=4, cache=False, ablate="zero",
                                             ablate_draws=2), progress=False)
    scan = jobs.scan(model, quick_scan, progress=False)
    metric = jobs.MetricSpec(sequences=4)
    fewshot_cfg = jobs.FewShotConfig(task="lookup", labels=("gold", "flipped", "random"), shots=(0, 1, 2), n_prompts=8,
                                     orders=1, n_bootstrap=20)
    return {
        "scan": scan,
        "track": track,
        "ablate": jobs.ablate(model, jobs.AblateConfig(metric=metric), progress=False),
        "patch": jobs.patch(model, jobs.PatchConfig(metric=metric), progress=False),
        "fewshot": jobs.fewshot(build_fewshot_hand_model(), fewshot_cfg, progress=False),
        "bench": jobs.bench(jobs.BenchConfig(models=("attn-v20-h8",), prompts=8, sequences=4, device="cpu"),
                            progress=False),
        "sweep": SweepReport(job="track", labels=["runs/a-long-run-name-for-width", "runs/b"], tracks=[track, track]),
        "sweep_scan": SweepReport(job="scan", labels=["hand-built", "again"], scans=[scan, scan]),
        "train": TrainReport(str(run), read_manifest(run)),
    }


KINDS = ["scan", "track", "ablate", "patch", "fewshot", "bench", "sweep", "sweep_scan", "train"]


@pytest.mark.parametrize("kind", KINDS)
def test_default_table_fits_100_columns_with_whole_headers_and_a_legend(reports, kind):
    report = reports[kind]
    text = format_report(report, "table", width=100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    shown = shown_columns(report)
    headers = [table_columns.header(c) for c in shown]
    header_line = next(line for line in lines if "│" in line or "┃" in line)
    cells = [c.strip() for c in header_line.strip("┃│ ").split("┃" if "┃" in header_line else "│")]
    assert cells == headers  # every shown header whole, on one line, in order
    assert "…" not in text
    legend = next((line for line in lines if line.startswith("legend:")), "")
    legend_text = " ".join(lines[lines.index(legend):]) if legend else ""
    for c, h in zip(shown, headers):
        if h not in SELF_EXPLANATORY:
            assert f"{h}: " in legend_text, f"{kind}: header {h!r} ({c}) is not in the legend"
    # The rows hold the report's own numbers: the first row's cells are its first record's values.
    first = report.rows()[0]
    row_line = lines[lines.index(header_line) + 2]
    assert _plain(first[shown[0]]).startswith(row_line.split("│")[1].strip())  # a long label folds, never cut


def _plain(value) -> str:
    from induction.reports.base import _cell

    return _cell(value)


@pytest.mark.parametrize("kind", ["scan", "track", "fewshot"])
def test_csv_and_json_keep_every_field_under_its_full_name(reports, kind):
    report = reports[kind]
    table = format_report(report, "table", width=100)
    rows = list(csv.DictReader(io.StringIO(format_report(report, "csv"))))
    assert list(rows[0]) == list(report.columns)
    assert len(rows) == len(report.rows())
    hidden = [c for c in report.columns if c not in shown_columns(report)]
    assert hidden and all(table_columns.header(c) not in table.splitlines()[1] for c in hidden if c in table_columns.HEADERS)
    if kind == "scan":  # JSON's head records keep the hidden fields too, with the table's numbers
        heads = json.loads(format_report(report, "json"))["heads"]
        assert [h[c] for h in heads for c in hidden] == [r[c] for r in report.heads() for c in hidden]


def test_columns_by_full_name_short_header_or_all(reports):
    report = reports["scan"]
    assert shown_columns(report, ["copy_ov", "layer", "prefix_matching"]) == ["copying_ov", "layer", "prefix_matching"]
    assert shown_columns(report, "all") == list(report.columns)
    with pytest.raises(ValueError, match="columns: unknown column 'nope'"):
        shown_columns(report, ["nope"])
    wide = format_report(report, "table", width=100, columns="all")
    header_line = next(line for line in wide.splitlines() if "┃" in line)
    # Asked-for columns are shown whole, however wide: no header is cut.
    assert [c.strip() for c in header_line.strip("┃ ").split("┃")] == [table_columns.header(c) for c in report.columns]
    assert "…" not in wide


def test_every_short_header_has_a_meaning_and_tables_name_real_columns(reports):
    from induction.heads.records import SCORE_NAMES

    assert table_columns.SCAN[2:7] == SCORE_NAMES  # the scan table's columns are the head record's fields
    assert set(table_columns.SCAN) <= set(reports["scan"].heads()[0])
    for column in table_columns.HEADERS:
        assert column in table_columns.MEANINGS, column
    for command, default in table_columns.DEFAULT_COLUMNS.items():
        assert set(default) <= set(table_columns.TABLE_COLUMNS[command]), command
    for command, available in table_columns.TABLE_COLUMNS.items():  # one header names one column per table
        headers = [table_columns.header(c) for c in available]
        assert len(set(headers)) == len(headers), (command, headers)


def test_cli_columns_option(handbuilt_dir, capsys):
    from induction.cli import main

    code = main(["scan", str(handbuilt_dir), "-q", "--prompts", "8", "--no-icl", "--bootstrap", "0",
                 "--columns", "layer,head,copy_ov,offset_copying"])
    out, err = capsys.readouterr()
    assert code == 0, err
    header_line = next(line for line in out.splitlines() if "┃" in line)
    assert [c.strip() for c in header_line.strip("┃ ").split("┃")] == ["layer", "head", "copy_ov", "copy@d"]
    assert "legend: copy_ov: copying from the weights" in out and "not shown" not in out
    code = main(["scan", str(handbuilt_dir), "--columns", "layer,nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--columns: unknown column 'nope'" in err
