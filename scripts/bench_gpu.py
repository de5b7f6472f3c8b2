"""Benchmark on a GPT-2-small-shaped model: scan time, exact patching vs TransformerLens, attribution vs exact.

Issue 10's targets, on an H200-class GPU:
1. `induction scan` at default settings (`jobs.scan(model, ScanConfig())`): at most 2 s of scoring,
   the load excluded (reported with and without it);
2. `circuits.patch_heads` at least 5x faster than TransformerLens'
   `patching.get_act_patch_attn_head_out_all_pos` at 8 x 128 tokens (and reported at 32 x 256),
   with the same numbers (max |difference|);
3. `circuits.attribute_heads` against exact patching: speed ratio and the Spearman rank correlation
   of its estimate with the exact effect (`patch_heads - metric(corrupted run)`).

The model is built here, `GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257,
n_positions=1024)` with random weights, saved with `save_pretrained` (safetensors) to a temporary
directory and loaded with `induction.load_model`, so nothing is downloaded. The patching task is
scripts/bench_patching.py's (clean `[bos, x, x]`, corrupted `[bos, x', x]`, the second half's
next-token log-probability). Everything runs in one process: each timed call is bracketed by CUDA
synchronisation, every method is warmed up first, the methods are interleaved (one repeat of each
in turn) and summarised by medians. The number of runs `circuits` stacks into one forward is its
own default (sized by the free memory of the device).

Usage:
    python scripts/bench_gpu.py --json bench_gpu.json            # CUDA when available, else the CPU
    python scripts/bench_gpu.py --device cpu --layers 2 --heads 4 --d-model 128 --vocab 4096 --n-ctx 256 \\
        --shapes 8x128 --json bench_cpu.json                     # a small end-to-end check on a CPU
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # TL's patching loop draws a progress bar

import torch  # noqa: E402
from transformer_lens import patching as tl_patching  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

import circuits  # noqa: E402
from induction import jobs, load_model  # noqa: E402
from induction.common.fileio import write_json_atomic  # noqa: E402
from induction.common.stats import spearman  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_patching import induction_task  # noqa: E402  (the same task as the CPU patching benchmark)

GPT2_SMALL = {"layers": 12, "heads": 12, "d_model": 768, "vocab": 50257, "n_ctx": 1024}
TARGETS = {"scan_scoring_s": 2.0, "patch_speedup_vs_transformer_lens_8x128": 5.0}


def build_model_dir(path: str | os.PathLike[str], layers: int, heads: int, d_model: int, vocab: int, n_ctx: int,
                    seed: int = 0) -> Path:
    """A randomly initialised Hugging Face GPT-2 of this shape saved to `path` (config.json + safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_head=heads, n_embd=d_model, vocab_size=vocab, n_positions=n_ctx,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return Path(path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_device(model: TransformerBridge) -> torch.device:
    return next(model.parameters()).device


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """fn()'s result and its wall time, with the device's queued work finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def interleaved_medians(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int,
                        warmup: int) -> dict[str, float]:
    """Median seconds of each function; every repeat runs each once, in turn, after `warmup` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[1])
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure_scan(spec: str, device: str, dtype: str, repeats: int = 3) -> dict[str, Any]:
    """`jobs.scan` at default settings: the load, the first scan after it, and the median of `repeats` more.

    `including_load_s` = load + first scan (what one `induction scan MODEL` call costs, less the
    imports); `scan_s` = the median warm scan (scoring alone).
    """
    where = torch.device(device)
    model, load_s = timed(lambda: load_model(spec, device=device, dtype=dtype), where)
    reset_peak_memory(where)
    first, first_s = timed(lambda: jobs.scan(model, jobs.ScanConfig()), where)
    warm = [timed(lambda: jobs.scan(model, jobs.ScanConfig()), where)[1] for _ in range(repeats)]
    return {
        "load_s": load_s, "scan_first_s": first_s, "scan_s": statistics.median(warm), "scan_runs_s": warm,
        "including_load_s": load_s + first_s, "peak_memory_bytes": peak_memory(where),
        "icl_score": None if first.icl is None else first.icl.score,
        "max_prefix_matching": float(first.scores.prefix_matching.max()),
        "n_prompts": jobs.ScanConfig().detector.prompts.n_prompts,
    }


def measure_patching(model: TransformerBridge, batch: int, pos: int, repeats: int = 5, warmup: int = 1,
                     seed: int = 0) -> dict[str, Any]:
    """`circuits.patch_heads` vs TransformerLens and `circuits.attribute_heads` vs `patch_heads` on
    `batch` x `pos` tokens of the induction task (module docstring), on the model's device."""
    device = model_device(model)
    clean, corrupted, metric = induction_task(model, batch, pos, seed)

    def transformer_lens() -> torch.Tensor:
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name.endswith("attn.hook_z"))
        return tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)

    def exact() -> torch.Tensor:
        return circuits.patch_heads(model, clean, corrupted, metric)

    def attribution() -> torch.Tensor:
        return circuits.attribute_heads(model, clean, corrupted, metric)

    reset_peak_memory(device)
    reference, patched, estimate = transformer_lens(), exact(), attribution()
    with torch.no_grad():
        baseline = float(metric(model(corrupted)))
    max_diff = float((patched.float() - reference.float()).abs().max())
    correlation = spearman(estimate.detach().float().cpu(), (patched.float() - baseline).cpu())
    times = interleaved_medians({"transformer_lens": transformer_lens, "patch_heads": exact,
                                 "attribute_heads": attribution}, device, repeats, warmup)
    return {
        "batch": batch, "pos": int(clean.shape[1]), "seconds": times,
        "speedup_patch_vs_transformer_lens": times["transformer_lens"] / times["patch_heads"],
        "speedup_attribution_vs_patch": times["patch_heads"] / times["attribute_heads"],
        "max_abs_diff_vs_transformer_lens": max_diff, "spearman_attribution_vs_patch": correlation,
        "baseline": baseline, "peak_memory_bytes": peak_memory(device),
        "patched": patched.float().cpu().tolist(), "transformer_lens": reference.float().cpu().tolist(),
    }


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "transformer_lens": importlib.metadata.version("transformer-lens"),
        "python": platform.python_version(), "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info |= {"gpu": props.name, "gpu_memory_bytes": int(total), "gpu_free_bytes_at_start": int(free),
                 "cuda": torch.version.cuda}
    return info


def parse_shape(text: str) -> tuple[int, int]:
    try:
        batch, pos = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: use BATCHxPOS, e.g. 8x128") from None
    if batch < 1 or pos < 5:
        raise argparse.ArgumentTypeError(f"shape {text!r}: need batch >= 1 and pos >= 5")
    return batch, pos


def report_lines(results: dict[str, Any]) -> list[str]:
    m, shape, on_cuda = results["machine"], results["model"], results["device"].startswith("cuda")
    lines = [
        f"model: random GPT-2 {shape['layers']}L x {shape['heads']}H, d_model {shape['d_model']}, "
        f"vocab {shape['vocab']}, n_ctx {shape['n_ctx']}; device {results['device']}, dtype {results['dtype']}",
        f"machine: {m.get('gpu', 'no GPU')}; {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
        f"load {m['load_average_1min']}; torch {m['torch']}, transformer-lens {m['transformer_lens']}",
    ]
    scan = results.get("scan")
    if scan:
        verdict = ("met" if scan["scan_s"] <= TARGETS["scan_scoring_s"] else "NOT met") if on_cuda else "applies on CUDA"
        lines += [
            f"{'scan (default settings)':<40} {'seconds':>10}",
            f"{'  load (load_model + move)':<40} {scan['load_s']:>10.2f}",
            f"{'  first scan after the load':<40} {scan['scan_first_s']:>10.2f}",
            f"{'  scan, warm (median)':<40} {scan['scan_s']:>10.2f}   target <= {TARGETS['scan_scoring_s']} s: {verdict}",
            f"{'  including the load':<40} {scan['including_load_s']:>10.2f}",
        ]
    lines.append(f"{'patching':<12} {'TL ms':>10} {'patch ms':>10} {'attrib ms':>10} {'patch/TL':>9} {'attr/patch':>10} "
                 f"{'max|diff|':>10} {'Spearman':>9}")
    for p in results["patching"]:
        s = p["seconds"]
        lines.append(f"{p['batch']:>4} x {p['pos']:<5} {s['transformer_lens'] * 1e3:>10.1f} {s['patch_heads'] * 1e3:>10.1f} "
                     f"{s['attribute_heads'] * 1e3:>10.1f} {p['speedup_patch_vs_transformer_lens']:>8.1f}x "
                     f"{p['speedup_attribution_vs_patch']:>9.1f}x {p['max_abs_diff_vs_transformer_lens']:>10.1e} "
                     f"{p['spearman_attribution_vs_patch']:>9.3f}")
    small = [p for p in results["patching"] if (p["batch"], p["pos"]) in ((8, 127), (8, 128))]
    if small:
        target = TARGETS["patch_speedup_vs_transformer_lens_8x128"]
        verdict = ("met" if small[0]["speedup_patch_vs_transformer_lens"] >= target else "NOT met") if on_cuda \
            else "applies on CUDA"
        lines.append(f"patch_heads vs TransformerLens at 8x128: target >= {target}x: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--model", help="a MODEL spec to load instead of building the random GPT-2")
    for name, value in GPT2_SMALL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value,
                            help=f"the random GPT-2's {name} (default: GPT-2 small's {value})")
    parser.add_argument("--shapes", type=lambda t: [parse_shape(s) for s in t.split(",")], default=[(8, 128), (32, 256)],
                        help="patching shapes BATCHxPOS, comma-separated (default: 8x128,32x256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per method (median reported)")
    parser.add_argument("--scan-repeats", type=int, default=3, help="warm scans timed (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing")
    parser.add_argument("--no-scan", action="store_true", help="skip the scan measurement")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    if max(pos for _, pos in args.shapes) > args.n_ctx and not args.model:
        parser.error(f"--shapes: a sequence is longer than --n-ctx {args.n_ctx}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        spec = args.model or str(build_model_dir(Path(tmp) / "gpt2", args.layers, args.heads, args.d_model,
                                                 args.vocab, args.n_ctx, args.seed))
        results: dict[str, Any] = {"device": str(device), "dtype": args.dtype, "machine": machine(device), "targets": TARGETS}
        if not args.no_scan:
            results["scan"] = measure_scan(spec, str(device), args.dtype, args.scan_repeats)
        model = load_model(spec, device=str(device), dtype=args.dtype)
    cfg = model.cfg
    results["model"] = {"spec": args.model or "random GPT-2", "layers": int(cfg.n_layers), "heads": int(cfg.n_heads),
                        "d_model": int(cfg.d_model), "vocab": int(cfg.d_vocab), "n_ctx": int(cfg.n_ctx)}
    results["patching"] = [measure_patching(model, batch, pos, args.repeats, args.warmup, args.seed)
                           for batch, pos in args.shapes]
    for line in report_lines(results):
        print(line)
    if args.json_out:
        write_json_atomic(args.json_out, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
