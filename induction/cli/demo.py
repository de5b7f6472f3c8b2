"""`induction demo --out DIR`: the main job on the embedded default models."""

from __future__ import annotations

import argparse
import sys

from induction.cli import add_device_arguments


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="train (or reuse) the default toy models and run everything",
                       description="Train (or reuse) the default 2-layer model and its 1-layer control, then scan, track, "
                                   "ablate/patch and few-shot them; write DIR/index.html, DIR/report.md, figures and "
                                   "every report as JSON. --out is the directory (default: demo).")
    p.add_argument("--no-fewshot", action="store_true", help="skip the few-shot part")
    p.add_argument("--draws", type=int, default=10, help="layer-matched random head sets in the controls (default: 10)")
    p.add_argument("--serial", action="store_true", help="train missing default models one after the other")
    add_device_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from induction.jobs.demo import DemoConfig, run_demo
    from induction.reports.base import format_report

    out = Path(args.out or "demo")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the demo writes a directory")
    result = run_demo(DemoConfig(out_dir=out, seed=args.seed, parallel=not args.serial, fewshot=not args.no_fewshot,
                                 draws=args.draws, progress=not args.quiet, device=args.device, dtype=args.dtype,
                                 style=args.style))
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(result.key_numbers, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(result.reports["scan_2l"], args.format))
        if result.static_problems:
            print(f"note: {next(iter(result.static_problems.values()))}", file=sys.stderr)
        if not args.quiet:
            print(f"demo written to {out}/ (index.html, report.md, *.json) in {result.runtime_s:.0f}s", file=sys.stderr)
    return 0
