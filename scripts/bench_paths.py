"""Benchmark: path patching resumed in the receiver's layer against full forwards and one path at a time.

On the model's own stream (the repeat-loss metric, `induction.measures.metrics`), every path from
every layer-0 head into every later head through q, k and v, noised as `induction patch --paths`
does, timed three ways in one process (medians of `--repeats`, interleaved):
1. `circuits.patch_paths` as it runs by default (resumed inside the receiver layer, several runs
   stacked per forward);
2. the same with `resume=False` (every step a hooked full forward, still stacked);
3. the same with `runs_per_forward=1` (resumed, one run per forward).
All three must give the same numbers (asserted to 1e-4 against the first).

Usage:
    python scripts/bench_paths.py                       # the default 2-layer toy model (cached)
    python scripts/bench_paths.py --model runs/default  # any MODEL induction.load_model reads

Measured (2-core CPU shared with other jobs, no GPU, one torch thread; the default 2-layer model,
48 paths, batch 16 x 128, medians of 3): resumed 1.21 s, full forwards 4.78 s (max |diff| 3e-8),
one run per forward 1.28 s (on this batch the CPU default already stacks one run per forward).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuits.paths import all_paths, patch_paths
from induction.loading.models import load_model
from induction.measures.metrics import stream_metric_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="MODEL spec (default: the default 2-layer toy model)")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model:
        model = load_model(args.model)
    else:
        from induction.training.defaults import default_model

        model = default_model("2l", progress=False)
    setup = stream_metric_setup(model, "repeat-loss", n_sequences=args.sequences, seed=0)
    paths = all_paths(model, senders=[(0, h) for h in range(int(model.cfg.n_heads))])
    ways = {"resumed, stacked": {}, "full forwards": {"resume": False}, "one run per forward": {"runs_per_forward": 1}}
    times: dict[str, list[float]] = {name: [] for name in ways}
    values = {}
    for _ in range(args.repeats):
        for name, kwargs in ways.items():
            start = time.perf_counter()
            result = patch_paths(model, setup.corrupted, setup.tokens, setup.metric, paths, **kwargs)
            times[name].append(time.perf_counter() - start)
            values[name] = result.values
    for name in ways:
        diff = float((values[name] - values["resumed, stacked"]).abs().max())
        assert diff <= 1e-4, (name, diff)
        print(f"{name:22s} {statistics.median(times[name]):7.3f} s  max |diff| {diff:.1e}")
    print(f"{len(paths)} paths, batch {tuple(setup.tokens.shape)}")


if __name__ == "__main__":
    main()
