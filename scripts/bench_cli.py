"""How fast the command line answers: `induction --help`, each subcommand's --help, argument errors.

Issue 20's target: every --help and every argument error "in well under a second", heavy imports
(torch, transformers, TransformerLens, plotly, pandas, numpy) only when a job runs. Each case runs
in a fresh (cold) Python process, `repeats` times, interleaved; the median wall time is reported,
beside two references measured the same way: an empty `python -c pass` (the interpreter's own
start-up) and `python -c "import torch"` (what --help used to cost at least). The tests hold the
import list (tests/test_cli_static.py); speed is measured here, not asserted in tests.

Usage:
    python scripts/bench_cli.py                 # 5 repeats
    python scripts/bench_cli.py --repeats 9 --json bench_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("demo", "train", "scan", "track", "ablate", "patch", "fewshot", "bench", "sweep")

CASES: dict[str, list[str]] = {
    "python -c pass (reference)": ["-c", "pass"],
    "import torch (reference)": ["-c", "import torch"],
    "induction --help": ["-m", "induction.cli", "--help"],
    **{f"induction {c} --help": ["-m", "induction.cli", c, "--help"] for c in COMMANDS},
    "induction scan (missing MODEL)": ["-m", "induction.cli", "scan"],
    "induction scan m --format xml": ["-m", "induction.cli", "scan", "m", "--format", "xml"],
    "induction track r --ablate max": ["-m", "induction.cli", "track", "r", "--ablate", "max"],
    "induction scan m --columns nope": ["-m", "induction.cli", "scan", "m", "--columns", "nope"],
}


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                          cwd=ROOT)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="cold runs of each case (default: 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times: dict[str, list[float]] = {name: [] for name in CASES}
    codes: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so load on the machine affects every case alike
        for name, case in CASES.items():
            seconds, codes[name] = time_once(case, env)
            times[name].append(seconds)
    rows = [{"case": name, "exit": codes[name], "median_s": round(statistics.median(t), 3),
             "min_s": round(min(t), 3), "max_s": round(max(t), 3)} for name, t in times.items()]
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  exit  median_s   min_s   max_s   ({args.repeats} cold runs each, {sys.executable})")
    for r in rows:
        print(f"{r['case']:<{width}}  {r['exit']:>4}  {r['median_s']:>8.3f}  {r['min_s']:>6.3f}  {r['max_s']:>6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"repeats": args.repeats, "python": sys.version.split()[0],
                                               "cases": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
