"""Progress that reads well: bars only on a terminal, one line per stage in a log, no third-party chatter."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from circuits.progress import StageLine, progress_bar
from induction.cli import main
from induction.loading.quiet import SILENCED, quiet_third_parties

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^[a-z][a-z -]*(?: \(ray\))?: .*done in \d+\.\d s$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_one_line_per_stage_elsewhere():
    tty = Terminal()
    list(progress_bar(range(5), desc="tracking", stage=True, unit="checkpoint", file=tty, mininterval=0))
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()  # tqdm redraws in place on a terminal

    log = io.StringIO()
    with progress_bar(total=12, initial=2, desc="training", unit="step", stage=True, file=log) as bar:
        for _ in range(10):
            bar.update(1)
        bar.set_postfix(loss="1.234")
    for _ in progress_bar(range(3), desc="scoring heads", stage=True, file=log):
        for _ in progress_bar(range(4), desc="loss", stage=True, file=log):  # a stage inside a stage: silent
            pass
    list(progress_bar(range(3), desc="batches", file=log))  # an inner loop: silent in a log
    list(progress_bar(range(3), desc="off", stage=True, enabled=False, file=log))  # progress=False: silent
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 2 and all(STAGE_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("training: 10 steps (from 2), loss=1.234, done in ")
    assert lines[1].startswith("scoring heads: done in ")


def test_a_stage_that_fails_or_stops_early_writes_nothing():
    log = io.StringIO()
    with pytest.raises(ValueError):
        for i in progress_bar(range(5), desc="tracking", stage=True, unit="checkpoint", file=log):
            if i == 2:
                raise ValueError("boom")
    bar = StageLine(desc="training", total=10, unit="step", file=log)
    with pytest.raises(KeyError):
        try:
            bar.update(3)
            raise KeyError("x")
        finally:
            bar.close()
    assert log.getvalue() == ""
    # ... and leaves no stage open: the next one writes its line.
    list(progress_bar(range(2), desc="tracking", stage=True, unit="checkpoint", file=log))
    assert log.getvalue().startswith("tracking: 2 checkpoints, done in ")


def test_cli_stderr_off_a_terminal_has_one_line_per_stage(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--layers", "1", "--d-model", "16", "--heads", "2", "--ctx", "16",
                 "--vocab", "16", "--batch-size", "2", "--steps", "6", "--log-checkpoints", "2", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 0, err
    code = main(["track", str(run), "--prompts", "4", "--seq-len", "12", "--icl-sequences", "4", "--bootstrap", "0",
                 "--held-out-sequences", "2", "--no-cache", "--format", "json", "--out", str(tmp_path / "t.json")])
    _, err2 = capsys.readouterr()
    assert code == 0, err2
    stderr = err + err2
    assert "\r" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("wrote ")]
    assert [line.split(":")[0] for line in lines] == ["training", "tracking"], stderr
    assert all(STAGE_LINE.match(line) for line in lines), lines
    assert lines[0].startswith("training: 6 steps, loss=")
    n_checkpoints = len(list((run / "checkpoints").iterdir()))
    assert lines[1].startswith(f"tracking: {n_checkpoints} checkpoints, done in ")


def test_loading_filter_drops_only_the_named_lines(caplog):
    (name, prefix), = SILENCED
    logger = logging.getLogger(name)
    with caplog.at_level(logging.WARNING, logger=name):
        with quiet_third_parties():
            logger.warning(prefix + "'kernels-community/flash-attn2' because Hugging Face Hub is in offline mode.")
            logger.warning("a kernel failed to load")  # any other line of that logger still shows
        logger.warning(prefix + "'x' (outside loading: shown)")
    assert [r.getMessage() for r in caplog.records] == ["a kernel failed to load", prefix + "'x' (outside loading: shown)"]
    assert not [f for f in logger.filters if type(f).__name__ == "_DropMessages"]  # removed after loading


_LOAD = """
import sys
from induction import load_model
load_model(sys.argv[1], device="cpu")
"""
_LOAD_WITH_TRANSFORMERS = """
import sys
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation="eager")
"""


def test_loading_gpt_neo_in_a_fresh_process_writes_nothing_to_stderr(hf_dirs):
    """The kernel notices come once per process, when GPT-Neo's modelling module is imported: a fresh one."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(hf_dirs["neo"])], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.slow
def test_loading_gpt_neo_prints_nothing_from_third_parties(hf_dirs):
    """In fresh processes (the kernel notices come once per process, when GPT-Neo's modelling module
    is imported): transformers alone prints them; `load_model` prints nothing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}

    def stderr_of(script: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, str(hf_dirs["neo"])], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    if "Skipping publisher trust check" not in stderr_of(_LOAD_WITH_TRANSFORMERS):
        pytest.skip("this transformers/kernels install prints no kernel-hub notice to silence")
    assert stderr_of(_LOAD) == ""
