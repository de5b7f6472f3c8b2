"""The `induction` CLI in-process: the scan report on the hand-built model, and bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest
from helpers import ROLES

from induction.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_json_flags_exactly_the_induction_head(handbuilt_dir, tmp_path, capsys):
    out_file = tmp_path / "scan.json"
    code, _, err = run_cli(capsys, "scan", handbuilt_dir, "--format", "json", "--out", out_file, "-q", "--prompts", "32")
    assert code == 0, err
    report = json.loads(out_file.read_text())
    flagged = [(h["layer"], h["head"]) for h in report["heads"] if h["is_induction"]]
    assert flagged == [ROLES.induction]
    by_prev = max(report["heads"], key=lambda h: h["previous_token"])
    by_dup = max(report["heads"], key=lambda h: h["duplicate_token"])
    assert (by_prev["layer"], by_prev["head"]) == ROLES.previous_token
    assert (by_dup["layer"], by_dup["head"]) == ROLES.duplicate_token
    assert report["icl_score"] < -1.0  # the hand-built model predicts repeats
    prov = report["provenance"]
    assert prov["seed"] == 0 and "transformer-lens" in prov["versions"] and prov["runtime_s"] > 0
    assert prov["settings"]["detector"]["prompts"]["n_prompts"] == 32
    for key in ("layer", "head", "prefix_matching", "copying", "copying_ov", "previous_token", "duplicate_token", "is_induction"):
        assert key in report["heads"][0]
    # How copying was estimated, in the report and its provenance; each head's error beside its score.
    assert report["copying_estimate"] == prov["settings"]["copying_estimate"]
    assert (report["copying_estimate"]["method"], report["copying_estimate"]["sources_per_prompt"],
            report["copying_estimate"]["seed"]) == ("sampled", 4, 0)
    assert all(h["copying_se"] >= 0 and len(h["copying_ci"]) == 2 for h in report["heads"])


def test_scan_exhaustive_copying_option(handbuilt_dir, tmp_path, capsys):
    """--copying-sources 0 scores every source: no sampling error, and the hand-built heads' exact values."""
    out_file = tmp_path / "scan.json"
    code, _, err = run_cli(capsys, "scan", handbuilt_dir, "--format", "json", "--out", out_file, "-q", "--prompts", "8",
                           "--no-icl", "--copying-sources", "0")
    assert code == 0, err
    report = json.loads(out_file.read_text())
    assert report["copying_estimate"]["method"] == "exhaustive"
    heads = {(h["layer"], h["head"]): h for h in report["heads"]}
    assert all(h["copying_se"] == 0.0 for h in heads.values())
    assert heads[ROLES.induction]["copying"] > 0.99 and heads[ROLES.anti_induction]["copying"] < -0.99


def test_scan_table_csv_markdown_agree(handbuilt_dir, capsys):
    rows = {}
    for fmt in ("csv", "markdown", "table"):
        code, out, err = run_cli(capsys, "scan", handbuilt_dir, "--format", fmt, "-q", "--prompts", "8", "--no-icl", "--bootstrap", "0")
        assert code == 0, err
        rows[fmt] = out
    csv_lines = rows["csv"].strip().splitlines()
    assert csv_lines[0].startswith("layer,head,prefix_matching,copying")
    first = csv_lines[1].split(",")
    assert (int(first[0]), int(first[1])) == ROLES.induction  # induction heads sorted first
    assert "| 1 | 0 | 1.000 | 1.000 |" in rows["markdown"]
    assert "induction heads: L1H0" in rows["table"]
    # The table shows the CSV's numbers under short headers (prefix = prefix_matching, ...), in the same order.
    table = parse_table(rows["table"])
    records = list(csv.DictReader(io.StringIO(rows["csv"])))
    assert len(table) == len(records) == 8
    for shown, record in zip(table, records):
        assert (shown["layer"], shown["head"]) == (record["layer"], record["head"])
        for header, column in (("prefix", "prefix_matching"), ("copy", "copying"), ("prev", "previous_token"),
                               ("dup", "duplicate_token"), ("d", "induction_offset")):
            assert shown[header] == (f"{float(record[column]):.3f}" if "." in record[column] else record[column])
        assert shown["ind"] == ("yes" if record["is_induction"] == "True" else "-")
    assert "copy_ov" not in rows["table"] and "copying_ov" in rows["csv"]  # hidden from the table, kept in CSV
    assert "not shown: copying_ov, offset_copying" in rows["table"]


def test_scan_writes_html_heatmap(handbuilt_dir, tmp_path, capsys):
    plot = tmp_path / "heads.html"
    code, _, err = run_cli(capsys, "scan", handbuilt_dir, "-q", "--prompts", "8", "--no-icl", "--plot", plot)
    assert code == 0, err
    html = plot.read_text()
    assert "plotly" in html.lower() and "prefix matching" in html


@pytest.mark.parametrize(
    "argv, message",
    [
        (["scan", "{tmp}/missing"], "does not exist"),
        (["scan", "{tmp}/corrupt"], "corrupt"),
        (["scan", "{tmp}/badconfig"], "config.json"),
        (["scan", "{model}", "--seq-len", "1000"], "exceeds the model's context"),
        (["scan", "{model}", "--bogus"], "unrecognized arguments"),
        (["scan", "{model}", "--format", "xml"], "invalid choice"),
        (["scan", "{model}", "--plot", "{tmp}/x.gif"], "use one of"),
        (["scan", "{model}", "--out", "{tmp}/nodir/x.json"], "does not exist"),
        (["scan", "{model}", "--out", "{tmp}"], "is a directory; name a file"),
        (["scan", "{model}", "--plot", "/proc/x.html"], "cannot write in /proc"),
        (["scan", "{model}", "--text", "{tmp}/t.txt"], "no tokenizer"),
        (["scan", "{model}", "--prompts", "0"], "--prompts must be >= 1"),
        (["scan", "{model}", "--prefix-threshold", "2"], "--prefix-threshold must be in"),
        (["scan", "{model}", "--copying-sources", "1"], "--copying-sources must be >= 2"),
        (["scan", "{model}", "--checkpoint", "5"], "single checkpoint"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_input_gives_one_line_error(handbuilt_dir, tmp_path, capsys, argv, message):
    import shutil

    shutil.copytree(handbuilt_dir, tmp_path / "corrupt")
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"garbage")
    shutil.copytree(handbuilt_dir, tmp_path / "badconfig")
    (tmp_path / "badconfig" / "config.json").write_text('{"d_model": "big"}')
    (tmp_path / "t.txt").write_text("some text")
    argv = [a.format(tmp=tmp_path, model=handbuilt_dir) for a in argv] + ["-q"] * (argv[0] == "scan")
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "x.gif").exists()


def test_scan_huggingface_directory_with_text_and_frequency_exclusion(tmp_path, capsys):
    from helpers import save_tiny_hf_gpt2

    save_tiny_hf_gpt2(tmp_path / "gpt2")
    (tmp_path / "t.txt").write_text(" ".join(f"w{(i * 7) % 50}" for i in range(2000)))
    (tmp_path / "freqs.json").write_text(json.dumps([1000] * 10 + [10] * 50))  # tokens 0-9 most frequent
    out = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "scan", tmp_path / "gpt2", "--text", tmp_path / "t.txt", "--format", "json",
                           "--out", out, "-q", "--prompts", "8", "--freqs", tmp_path / "freqs.json",
                           "--exclude-top", "10", "--seq-len", "48", "--bootstrap", "0")
    assert code == 0, err
    report = json.loads(out.read_text())
    assert "text file t.txt" in report["icl"]["data"] and len(report["heads"]) == 8
    assert report["provenance"]["settings"]["detector"]["prompts"]["exclude_top"] == 10
    import torch

    from induction.heads.scores import build_prompts
    from induction.inputs.prompts import RepeatedTokensConfig
    from induction.loading.models import load_model

    model = load_model(tmp_path / "gpt2")
    prompts = build_prompts(model, RepeatedTokensConfig(n_prompts=8, exclude_top=10, seq_len=48),
                            torch.tensor([1000.0] * 10 + [10.0] * 50))
    assert set(prompts.tokens[:, 1:].flatten().tolist()).isdisjoint(range(10))


@pytest.fixture(scope="module")
def shifted_dir(tmp_path_factory):
    """The suite's `attn-v20-h8` hand-built model (a canonical head, a shifted head at d = 3 reading a
    key offset head at lag 4 and a query previous-token head) as a checkpoint directory, and its spec."""
    from induction.bench.handbuilt import build_handbuilt
    from induction.bench.suite import SUITE
    from induction.loading.native import save_checkpoint

    spec = SUITE["attn-v20-h8"]()
    path = tmp_path_factory.mktemp("shifted") / "model"
    save_checkpoint(build_handbuilt(spec), path, {"bos_token_id": 0})
    return path, spec


def test_scan_names_the_shifted_head_its_offset_and_implied_circuit(shifted_dir, tmp_path, capsys):
    path, spec = shifted_dir
    heads = {r.role if r.role != "offset" else f"offset{r.lag}": (layer, h)
             for layer, rs in enumerate(spec.layers) for h, r in enumerate(rs)}
    shifted, canonical = heads["shifted_induction"], heads["induction"]
    out_file = tmp_path / "scan.json"
    code, _, err = run_cli(capsys, "scan", path, "--format", "json", "--out", out_file, "-q", "--prompts", "24",
                           "--no-icl", "--bootstrap", "0")
    assert code == 0, err
    text = out_file.read_text()
    assert "NaN" not in text  # unscored offsets are null
    report = json.loads(text)
    by_head = {(h["layer"], h["head"]): h for h in report["heads"]}
    assert report["shifted_induction_heads"] == [list(shifted)] and report["induction_heads"] == [list(canonical)]
    assert (by_head[shifted]["induction_offset"], by_head[shifted]["is_shifted_induction"]) == (3, True)
    assert (by_head[canonical]["induction_offset"], by_head[canonical]["is_shifted_induction"]) == (1, False)
    assert by_head[heads["duplicate_token"]]["offset_copying"] is None
    (circuit,) = report["implied_circuits"]
    assert (circuit["layer"], circuit["head"], circuit["offset"]) == (*shifted, 3)
    assert circuit["key_by_lag"] == [list(heads["offset4"])] and circuit["query_by_lag"] == [list(heads["previous_token"])]
    assert circuit["value_by_lag"] == [list(heads["offset2"])]
    assert report["offsets"]["scored"][0] == -4 and report["offsets"]["scored"][-1] < 16  # periods 4-19 only

    code, out, err = run_cli(capsys, "scan", path, "-q", "--prompts", "24", "--no-icl", "--bootstrap", "0")
    assert code == 0, err
    name = f"L{shifted[0]}H{shifted[1]}"
    line = next(line for line in out.splitlines() if line.startswith("shifted induction heads (d >= 2):"))
    assert f"{name} (d=3, " in line
    implied = next(line for line in out.splitlines() if line.strip().startswith(f"{name} d=3: implies"))
    key = heads["offset4"]
    assert f"key L{key[0]}H{key[1]} (lag 4)" in implied
    assert "offsets scored: -4.." in out
    rows = {(int(r["layer"]), int(r["head"])): r for r in parse_table(out)}  # cells by header name
    assert (rows[shifted]["d"], rows[shifted]["prefix@d"], rows[shifted]["shifted"], rows[shifted]["ind"]) == \
        ("3", "0.964", "yes", "-")
    assert (rows[canonical]["d"], rows[canonical]["shifted"], rows[canonical]["ind"]) == ("1", "-", "yes")


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a rich table printed by the CLI, as {header: cell}."""
    lines = text.splitlines()
    header_line = next(line for line in lines if "┃" in line)
    headers = [c.strip() for c in header_line.strip().strip("┃").split("┃")]
    rows = []
    for line in lines[lines.index(header_line) + 2:]:
        if not line.startswith("│"):
            break
        rows.append(dict(zip(headers, (c.strip() for c in line.strip().strip("│").split("│")))))
    return rows


@pytest.mark.parametrize("argv, message", [(("--max-offset", "0"), "--max-offset must be >= 1"),
                                           (("--min-offset", "2"), "--min-offset must be <= 1"),
                                           (("--offset-support", "1.5"), "--offset-support must be in (0, 1]"),
                                           (("--max-offset", "1000000000"), "--max-offset must be within the prompt"),
                                           (("--min-offset", "-20", "--seq-len", "16"), "--min-offset must be within"),
                                           (("--copying-sources", "100000"), "--copying-sources must be at most")])
def test_scan_rejects_bad_offset_settings_in_one_line(handbuilt_dir, capsys, argv, message):
    code, out, err = run_cli(capsys, "scan", handbuilt_dir, "-q", "--no-icl", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
