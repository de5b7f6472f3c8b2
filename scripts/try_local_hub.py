"""The real-model path on a machine without network: a hub on 127.0.0.1 holding tiny models, and the
commands a researcher runs against the real one, timed.

The hub is the test suite's (`tests/hub_server.py`: a GPT-2 `tiny/gpt2`, a Pythia-style suite
`EleutherAI/pythia-tiny` with branches step0, step1000, step2000 (= step1000's weights), step4000 and
main, a gated `tiny/gated`, a pickle-only `tiny/pickled`), served with the standard library; the
Hugging Face cache is a temporary folder. Each command runs in this process through
`induction.cli.main`, as the console script would, and its wall time and exit status are printed.

Usage:
    python scripts/try_local_hub.py          # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="induction-hub-"))
    os.environ.update(HF_HOME=str(work / "hf"), INDUCTION_CACHE=str(work / "induction"), HF_HUB_OFFLINE="0",
                      HF_HUB_DISABLE_TELEMETRY="1", DISABLE_SAFETENSORS_CONVERSION="1")
    os.environ.pop("HF_TOKEN", None)
    import torch
    from hf_models import build_hf_model
    from hub_server import LocalHub
    from safetensors.torch import load_file

    from induction.cli import main as cli

    torch.set_num_threads(1)
    hub = LocalHub()
    build_hf_model("gpt2", work / "gpt2")
    hub.add("tiny/gpt2", "main", work / "gpt2")
    hub.add("tiny/gated", "main", work / "gpt2", gated=True)
    files = {p.name: p.read_bytes() for p in (work / "gpt2").iterdir() if p.name != "model.safetensors"}
    torch.save(load_file(work / "gpt2" / "model.safetensors"), work / "pytorch_model.bin")
    hub.add("tiny/pickled", "main", {**files, "pytorch_model.bin": (work / "pytorch_model.bin").read_bytes()})
    for branch, seed in {"step0": 10, "step1000": 11, "step4000": 12}.items():
        build_hf_model("neox", work / branch, seed=seed)
        hub.add("EleutherAI/pythia-tiny", branch, work / branch)
    hub.add("EleutherAI/pythia-tiny", "step2000", work / "step1000")
    hub.add("EleutherAI/pythia-tiny", "main", work / "step4000")
    os.environ["HF_ENDPOINT"] = hub.start()
    fast = ["-q", "--prompts", "8", "--seq-len", "32", "--bootstrap", "0", "--no-icl"]
    commands = [
        ("scan tiny/gpt2 (downloads)", ["scan", "tiny/gpt2", *fast, "--out", str(work / "a.json")]),
        ("scan tiny/gpt2 (cached)", ["scan", "tiny/gpt2", *fast, "--out", str(work / "b.json")]),
        ("scan tiny/gpt2 --offline (cached)", ["scan", "tiny/gpt2", "--offline", *fast, "--out", str(work / "c.json")]),
        ("scan tiny/other --offline (not cached)", ["scan", "tiny/other", "--offline", *fast]),
        ("scan tiny/gated (no HF_TOKEN)", ["scan", "tiny/gated", *fast]),
        ("scan tiny/pickled", ["scan", "tiny/pickled", *fast]),
        ("scan tiny/pickled --allow-pickle", ["scan", "tiny/pickled", "--allow-pickle", *fast, "--out", str(work / "d.json")]),
        ("track pythia-tiny --revisions auto --no-keep-weights",
         ["track", "EleutherAI/pythia-tiny", "--revisions", "auto", "--max-revisions", "3", "--no-keep-weights",
          "--held-out-sequences", "2", *fast, "--out", str(work / "e.json")]),
        ("the same, rerun (cached results)",
         ["track", "EleutherAI/pythia-tiny", "--revisions", "auto", "--max-revisions", "3", "--no-keep-weights",
          "--held-out-sequences", "2", *fast, "--out", str(work / "f.json")]),
    ]
    print(f"{'command':55s} {'exit':>4s} {'seconds':>8s}")
    for name, argv in commands:
        start = time.perf_counter()
        status = cli(argv)
        print(f"{name:55s} {status:4d} {time.perf_counter() - start:8.2f}", flush=True)
    hub.stop()


if __name__ == "__main__":
    main()
