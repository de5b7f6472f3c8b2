"""Reliability, round 2 (issue 21), inputs and outputs: sweep files, Ray addresses, --text, --out.

Cases 7, 8, 11, 12, 13 and the OS-error messages of 14, built as the battery built them: a sweep
file in a subfolder, a plain HTTP server on loopback, a text file far larger than a scan reads,
--out onto links, device nodes and the process's own stdout."""

from __future__ import annotations

import errno
import http.server
import json
import os
import shutil
import socket
import stat
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from helpers import assert_one_line, cli
from hf_models import ENGLISH_TEXT, build_hf_model

from induction.cli import main
from induction.common.fileio import OutputError, output_target, write_output
from induction.jobs.executor import ExecutorError, _check_address
from induction.jobs.sweep import read_targets
from induction.measures.icl import read_text_tokens
from induction.training.train import TrainConfig, train

SCAN = ["--prompts", "4", "--no-icl", "--bootstrap", "0", "-q", "--device", "cpu", "--format", "json"]




@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_flat(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=16, steps=2, n_log_checkpoints=1,
                                checkpoint_every=0, batch_size=2)
    return train(cfg, tmp_path_factory.mktemp("io21") / "run", progress=False)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hfio") / "gpt2"
    build_hf_model("gpt2", path)
    return path


# ---- 7, 8: sweep files ---------------------------------------------------------------------------

def test_sweep_paths_are_relative_to_the_file_never_the_working_directory(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run, tmp_path / "rel_run")  # ./rel_run exists; sub/rel_run does not
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.toml").write_text('[[runs]]\npath = "rel_run"\n')
    code, out, err = cli(capsys, "sweep", "sub/s.toml", "-q")
    assert_one_line(code, err, "sub/s.toml", "relative to the file", str(tmp_path / "sub" / "rel_run"), "does not exist")
    assert out == "" and not (tmp_path / "rel_run" / "track").exists()  # nothing was tracked
    (tmp_path / "sub" / "s.toml").write_text('[[runs]]\npath = "./nowhere/x"\n')
    code, _, err = cli(capsys, "sweep", "sub/s.toml", "-q")
    assert_one_line(code, err, str(tmp_path / "sub" / "nowhere" / "x"))
    shutil.move(tmp_path / "rel_run", tmp_path / "sub" / "rel_run")
    (tmp_path / "sub" / "s.toml").write_text('[[runs]]\npath = "rel_run"\n[[runs]]\npath = "gpt2"\n')
    targets, _ = read_targets("sub/s.toml")
    assert Path(targets[0].path).resolve() == (tmp_path / "sub" / "rel_run").resolve()
    assert targets[1].path == "gpt2"  # a hub name stays one


def test_the_same_run_twice_in_a_sweep_is_an_error_naming_both(tiny_run, tmp_path, capsys):
    shutil.copytree(tiny_run, tmp_path / "dup_run")
    (tmp_path / "sub").mkdir()
    (tmp_path / "s.toml").write_text('[[runs]]\npath = "dup_run"\nlabel = "seed 0"\n'
                                     '[[runs]]\npath = "sub/../dup_run"\nlabel = "seed 1"\n')
    code, out, err = cli(capsys, "sweep", tmp_path / "s.toml", "-q")
    assert_one_line(code, err, "'seed 0'", "'seed 1'", "same run", str(tmp_path / "dup_run"))
    assert out == "" and not (tmp_path / "dup_run" / "track").exists()
    (tmp_path / "link_run").symlink_to(tmp_path / "dup_run")
    code, _, err = cli(capsys, "sweep", f"{tmp_path / 'dup_run'},{tmp_path / 'link_run'}", "-q")
    assert_one_line(code, err, "same run")


# ---- 12: Ray addresses ---------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(handler_or_reply):
    """A server on a free loopback port: an HTTP server, or one that sends `reply` to whatever comes."""
    if isinstance(handler_or_reply, bytes):
        listener = socket.create_server(("127.0.0.1", 0))

        def answer():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(64)
                    conn.sendall(handler_or_reply)
                    time.sleep(0.2)

        threading.Thread(target=answer, daemon=True).start()
        return listener.getsockname()[1], listener.close
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_or_reply)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], server.shutdown


def test_a_plain_http_server_is_no_ray_head_and_fails_in_one_line_within_seconds(tiny_run, capsys):
    port, stop = _serve(_Quiet)
    try:
        start = time.perf_counter()
        code, out, err = cli(capsys, "track", tiny_run, "--ray", f"127.0.0.1:{port}", "-q", "--no-cache")
        assert_one_line(code, err, f"127.0.0.1:{port}", "not a Ray head", "does not speak gRPC")
        assert time.perf_counter() - start < 15 and out == ""
    finally:
        stop()


def test_a_server_that_says_nothing_fails_within_the_probe_timeout(monkeypatch):
    import induction.jobs.executor as executor

    monkeypatch.setattr(executor, "PROBE_TIMEOUT_S", 0.5)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog) but never answers
    try:
        start = time.perf_counter()
        with pytest.raises(ExecutorError, match="no answer"):
            _check_address(f"127.0.0.1:{silent.getsockname()[1]}")
        assert time.perf_counter() - start < 3
    finally:
        silent.close()


def test_a_server_that_answers_http2_settings_passes_the_probe():
    """What a gRPC server (Ray's GCS) sends first: a SETTINGS frame (type 4) on stream 0."""
    port, stop = _serve(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64")
    try:
        _check_address(f"127.0.0.1:{port}")
        _check_address(f"ray://127.0.0.1:{port}")
    finally:
        stop()


# ---- 11: --text reads what it needs --------------------------------------------------------------

def test_text_is_read_as_a_bounded_prefix_with_the_same_tokens(hf_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    words = ENGLISH_TEXT.replace("\n", " ")
    small = tmp_path / "small.txt"
    small.write_text(ENGLISH_TEXT * 3)
    whole = tok(small.read_text(), add_special_tokens=False)["input_ids"]
    for needed in (5, 127, 600, len(whole) + 50):
        assert read_text_tokens(tok, small, needed) == whole[:needed]  # as if the whole file were tokenised
    big = tmp_path / "big.txt"
    with big.open("w") as handle:  # 40 MB: the scan needs ~1000 tokens (~6 KB) of it
        for _ in range(40 * 2**20 // len(words)):
            handle.write(words)
    tracemalloc.start()
    try:
        ids = read_text_tokens(tok, big, 8 * 127)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ids) == 8 * 127 and ids == tok(words * 8, add_special_tokens=False)["input_ids"][: 8 * 127]
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB while reading a {big.stat().st_size >> 20} MiB file"


def test_scan_with_a_text_far_larger_than_it_needs_stays_small(hf_dir, tmp_path, capsys):
    """The battery's case 11 through the CLI: the scan reads 8 windows of the file, not the file."""
    big = tmp_path / "big.txt"
    words = ENGLISH_TEXT.replace("\n", " ")
    with big.open("w") as handle:  # 24 MB
        for _ in range(24 * 2**20 // len(words)):
            handle.write(words)
    argv = ["scan", hf_dir, "--prompts", "4", "--icl-sequences", "8", "--bootstrap", "0", "-q", "--device", "cpu",
            "--format", "json", "--text", big]
    tracemalloc.start()
    try:
        code, out, err = cli(capsys, *argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    assert json.loads(out)["icl_score"] is not None
    print(f"traced peak {peak / 2**20:.2f} MiB")
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB of Python objects for a 24 MiB text"


def test_a_text_without_words_is_refused_not_read_to_its_end(hf_dir, tmp_path):
    from transformers import AutoTokenizer

    from induction.measures.icl import TEXT_MAX_BYTES_PER_TOKEN, ICLDataError

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    blank = tmp_path / "blank.txt"
    with blank.open("w") as handle:
        handle.write(" " * (TEXT_MAX_BYTES_PER_TOKEN * 20 + 2**20))
    with pytest.raises(ICLDataError, match="hold only 0 tokens, 10 are needed"):
        read_text_tokens(tok, blank, 10)


# ---- 13: --out -----------------------------------------------------------------------------------

def test_out_through_a_symlink_writes_its_target_and_keeps_the_link(tiny_run, tmp_path, capsys):
    target = tmp_path / "reports" / "scan.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["heads"]
    dangling = tmp_path / "new.json"
    dangling.symlink_to(tmp_path / "reports" / "new-target.json")  # a link to a file not written yet
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", dangling)
    assert code == 0 and dangling.is_symlink() and json.loads((tmp_path / "reports" / "new-target.json").read_text())


def _char_device(path: Path, major: int, minor: int) -> Path:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path


def test_out_onto_a_device_writes_in_place_and_never_replaces_the_node(tiny_run, tmp_path, capsys):
    null = _char_device(tmp_path / "null", 1, 3)
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", null)
    assert code == 0, err
    assert stat.S_ISCHR(null.stat().st_mode)
    full = _char_device(tmp_path / "full", 1, 7)  # a copy of /dev/full: every write fails with ENOSPC
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", full)
    assert_one_line(code, err, str(full), "No space left on device")
    assert stat.S_ISCHR(full.stat().st_mode)
    link = tmp_path / "to-full"
    link.symlink_to(full)
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", link)
    assert_one_line(code, err, "No space left on device")
    assert link.is_symlink() and stat.S_ISCHR(full.stat().st_mode)


def test_out_to_stdout_dash_and_fd_links_reaches_the_processs_stdout(tiny_run, tmp_path, capfd):
    link = tmp_path / "fd1"
    link.symlink_to("/proc/self/fd/1")
    for out in ("-", "/dev/stdout", str(link)):
        assert main(["scan", str(tiny_run), *SCAN, "--out", out]) == 0
        printed, _ = capfd.readouterr()
        assert json.loads(printed)["heads"], out
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    assert output_target("/dev/stderr").fd == 2 and output_target("/dev/fd/7").fd == 7


def test_out_onto_a_directory_or_socket_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    code, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", tmp_path)
    assert_one_line(code, err, "--out", "is a directory")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        with pytest.raises(OutputError, match="socket"):
            write_output(tmp_path / "s.sock", "x")
    finally:
        sock.close()


def test_a_fifo_without_a_reader_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="No such device or address"):
        write_output(fifo, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# ---- 14: OS errors are one line saying what to do ------------------------------------------------

@pytest.mark.parametrize("code, strerror, advice", [
    (errno.EROFS, "Read-only file system", "choose a writable place"),
    (errno.EISDIR, "Is a directory", "name a file"),
    (errno.ENOSPC, "No space left on device", "free some space"),
])
def test_os_errors_reach_the_user_translated(tiny_run, tmp_path, capsys, monkeypatch, code, strerror, advice):
    import induction.common.fileio as fileio

    def fail(path, text):
        raise OSError(code, strerror, str(path))

    monkeypatch.setattr(fileio, "write_output", fail)
    status, _, err = cli(capsys, "scan", tiny_run, *SCAN, "--out", tmp_path / "r.json")
    assert_one_line(status, err, str(tmp_path / "r.json"), strerror, advice)
    assert "OSError" not in err and "[Errno" not in err


@pytest.mark.parametrize("message, shown", [
    ("You set `ignore_mismatched_sizes` to `False`, thus raising an error. For details look at the above report!",
     "does not have the shape config.json implies"),
    ("Something failed: look at the above report!", "RuntimeError"),
    ("", "RuntimeError"),
    ("a real message\nwith a second line", "a real message"),
])
def test_a_message_that_only_points_at_a_report_is_never_shown_alone(message, shown):
    from induction.loading.errors import one_line

    line = one_line(RuntimeError(message))
    assert shown in line and "above report" not in line
