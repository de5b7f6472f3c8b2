"""Benchmark: what `induction scan` costs against a plain forward pass over the same prompts.

The subject is a GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, vocabulary 50257,
context 1024) with random weights, built here and saved with `save_pretrained` to a temporary
directory (nothing is downloaded), or any MODEL given with --model. One invocation measures, each
in a fresh child process so that each has its own peak memory and pays the same imports:

  plain  `induction.load_model(MODEL)` + `model(tokens)` (full logits) over the detector's prompts
         (64 x 256 repeated random tokens at default settings), in batches of the detector's 16;
  scan   `induction scan MODEL` at default settings (the CLI in-process, load included: detector,
         sampled copying estimate, copying_ov, ICL score on 64 x 512 tokens, bootstrap intervals);
         on CUDA, the same job (`induction.jobs.scan`) on the model moved to the device;
  track  with --track: one checkpoint of `induction track` at default settings (load + the
         job's `score_checkpoint`: the scan's scores plus the held-out loss, a full-logit forward
         over 8192 tokens of the model's stream).

For each: wall time, CPU time of the process (all threads), peak resident memory (`ru_maxrss`,
imports included) and, on CUDA, peak device memory; then the ratios scan / plain. CPU time is the
fairer measure on a machine shared with other jobs (wall time counts waiting for a core).
`--check` exits 1 unless the scan (and, with --track, one checkpoint of track) costs at most 3x the
plain pass (CPU time on the CPU, wall time on CUDA) and peaks at or under 3 GiB (resident memory on
the CPU, device memory on CUDA).

Usage:
    python scripts/bench_scan.py                            # CPU, one thread, GPT-2-small-shaped model
    python scripts/bench_scan.py --threads 2 --track --json out.json
    python scripts/bench_scan.py --device cuda --check
    python scripts/bench_scan.py --model runs/toy           # any MODEL `induction.load_model` reads
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_RATIO = 3.0
MAX_PEAK_GIB = 3.0


def build_gpt2_small(path: Path) -> None:
    """A randomly initialised GPT-2-small-shaped Hugging Face model, saved with `save_pretrained`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)


def child(mode: str, model_dir: str, device: str, threads: int) -> dict:
    """Run one measured phase in this process and return its figures."""
    import torch

    torch.set_num_threads(threads)
    import warnings

    warnings.simplefilter("ignore")
    from induction.cli import main as cli_main
    from induction.heads.scores import build_prompts
    from induction.jobs import ScanConfig, scan
    from induction.loading.models import load_model
    from induction.reports.base import format_report

    cuda = device.startswith("cuda")
    rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    wall, cpu = time.perf_counter(), time.process_time()
    extra: dict = {}
    if mode == "plain":
        model = load_model(model_dir)
        model = model.to(device) if cuda else model
        cfg = ScanConfig().detector
        tokens = build_prompts(model, cfg.prompts).tokens
        with torch.no_grad():
            for start in range(0, tokens.shape[0], cfg.batch_size):
                model(tokens[start : start + cfg.batch_size].to(device))
        extra["prompts"] = list(tokens.shape)
    elif mode == "track":
        from induction.jobs import TrackConfig
        from induction.jobs.track import HELD_OUT_SEED_OFFSET, score_checkpoint

        model = load_model(model_dir)
        model = model.to(device) if cuda else model
        scored = score_checkpoint(model, TrackConfig(), HELD_OUT_SEED_OFFSET)
        extra["held_out_loss"] = scored["held_out_loss"]
    elif cuda:
        model = load_model(model_dir).to(device)
        report = scan(model, ScanConfig())
        format_report(report, "json")
        extra["icl_score"] = report.icl.score if report.icl else None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scan.json"
            status = cli_main(["scan", model_dir, "--quiet", "--format", "json", "--out", str(out)])
            if status != 0:
                raise SystemExit(f"induction scan exited with {status}")
            report = json.loads(out.read_text())
        extra["icl_score"] = report["icl_score"]
        extra["copying_estimate"] = report["copying_estimate"]
        extra["max_copying_se"] = max(h["copying_se"] for h in report["heads"])
    if cuda:
        torch.cuda.synchronize()
    out = {
        "mode": mode,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "rss_after_imports_gib": round(rss_after_imports, 3),
        "threads": torch.get_num_threads(),
        **extra,
    }
    if cuda:
        out["peak_device_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def run_child(mode: str, model_dir: str, device: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", model_dir, "--device", device, "--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{mode} phase failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a MODEL directory (default: build the GPT-2-small-shaped model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per phase (default: 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless ratio <= {MAX_RATIO} and peak <= {MAX_PEAK_GIB} GiB")
    parser.add_argument("--track", action="store_true", help="also measure one checkpoint of `induction track`")
    parser.add_argument("--child", choices=("plain", "scan", "track"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(child(args.child, args.model, args.device, args.threads)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            model_dir = str(Path(tmp) / "gpt2-small-shaped")
            started = time.perf_counter()
            build_gpt2_small(Path(model_dir))
            print(f"built the GPT-2-small-shaped model in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        plain = run_child("plain", model_dir, args.device, args.threads)
        scan = run_child("scan", model_dir, args.device, args.threads)
        tracked = run_child("track", model_dir, args.device, args.threads) if args.track else None

    cuda = args.device.startswith("cuda")
    ratios = {"cpu": round(scan["cpu_s"] / plain["cpu_s"], 2), "wall": round(scan["wall_s"] / plain["wall_s"], 2)}
    checked = [scan] + ([tracked] if tracked else [])
    ratio = max(round((row["wall_s"] if cuda else row["cpu_s"]) / (plain["wall_s"] if cuda else plain["cpu_s"]), 2)
                for row in checked)
    peak = max(row["peak_device_gib"] if cuda else row["peak_rss_gib"] for row in checked)
    result = {
        "model": args.model or "GPT-2-small-shaped (random weights)", "device": args.device, "threads": args.threads,
        "plain": plain, "scan": scan, "ratio": ratios,
        "track": tracked, "track_ratio": None if tracked is None else {
            "cpu": round(tracked["cpu_s"] / plain["cpu_s"], 2), "wall": round(tracked["wall_s"] / plain["wall_s"], 2)}, "checked_ratio": ratio, "checked_peak_gib": peak,
        "passes": ratio <= MAX_RATIO and peak <= MAX_PEAK_GIB,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    print(f"{'phase':<8}{'wall s':>10}{'CPU s':>10}{'peak RSS GiB':>14}" + (f"{'peak GPU GiB':>14}" if cuda else ""))
    for row in (plain, scan) + ((tracked,) if tracked else ()):
        line = f"{row['mode']:<8}{row['wall_s']:>10.1f}{row['cpu_s']:>10.1f}{row['peak_rss_gib']:>14.2f}"
        print(line + (f"{row['peak_device_gib']:>14.2f}" if cuda else ""))
    print(f"scan / plain: CPU time {ratios['cpu']}x, wall time {ratios['wall']}x "
          f"({args.threads} thread(s), {args.device}; load average {result['machine']['load_average']})")
    if tracked:
        print(f"track (one checkpoint) / plain: CPU time {result['track_ratio']['cpu']}x, "
              f"wall time {result['track_ratio']['wall']}x")
    print(f"checked ({' and '.join(row['mode'] for row in checked)}): ratio {ratio}x (<= {MAX_RATIO}), "
          f"peak {peak} GiB (<= {MAX_PEAK_GIB}): "
          f"{'pass' if result['passes'] else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if (result["passes"] or not args.check) else 1


if __name__ == "__main__":
    sys.exit(main())
