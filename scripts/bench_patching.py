"""Benchmark: exact head patching against TransformerLens, and attribution patching against exact.

In one process, on the same inputs:
1. TL's `patching.get_act_patch_attn_head_out_all_pos` vs `circuits.patch_heads`
   (asserts max |difference| <= 1e-5, reports the speed ratio);
2. `circuits.attribute_heads` vs `circuits.patch_heads` (speed ratio, and the Spearman rank
   correlation of the attribution estimate with the exact effect `patch - baseline`).

The task is induction on repeated random tokens: clean prompts are `[x, x]`, corrupted ones
`[x', x]` (the first half resampled, so nothing earlier predicts the second half); the metric is
the mean log-probability of the next token over the second half.

Timings interleave the methods (one repeat of each in turn, after warm-up runs) and report
medians, so a machine shared with other jobs slows all of them alike.

`resumed` says whether `patch_heads` took the engine's in-layer shortcut (`circuits.engine`), and
`sweep_full_forwards` times the same patching with full forwards (`resume=False`), what every run
fell back to on rotary models before the engine replayed their blocks' inputs.

Usage:
    python scripts/bench_patching.py                      # a random 4-layer x 8-head model
    python scripts/bench_patching.py --model runs/toy     # a model `induction.load_model` reads
    python scripts/bench_patching.py --family llama       # a random Hugging Face model of that family
                                                          # (gpt2, neox, llama, neo; tests/hf_models.py),
                                                          # --layers/--heads/--d-model as for the default

Measured (CPU, 2 cores shared with other jobs at load 5-7, one torch thread, `--family F
--layers 4 --heads 8 --d-model 128`, batch 8 x 63 tokens, medians of 7; speed-ups over TL's
`get_act_patch_attn_head_out_all_pos` in the same process):

    family         resumed  patch_heads  full forwards  max |diff|  attribution vs patch
    gpt2           True     1.75x        1.07x          1.9e-06     7.2x, Spearman 0.37
    neox           True     2.42x        1.29x          9.5e-07     5.6x, Spearman 0.66
    llama          True     2.13x        1.51x          1.9e-06     7.4x, Spearman 0.68
    neo            True     1.83x        1.19x          2.9e-06     6.4x, Spearman 0.25
    llama, 8 layers True    2.42x        1.38x          1.9e-06     9.1x, Spearman 0.67

"full forwards" is what rotary models (neox, llama) got before the engine replayed their blocks'
inputs: its self-check failed and every run fell back to a hooked full forward.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

# TL's patching loop draws a progress bar; tqdm reads this when it is imported (below).
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from transformer_lens import patching as tl_patching  # noqa: E402
from transformer_lens.config import TransformerBridgeConfig  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

import circuits  # noqa: E402
from circuits import engine as sweep  # noqa: E402  (the batched intervention engine)
from circuits.hooks import z_name  # noqa: E402
from induction.common.stats import spearman  # noqa: E402


def random_model(
    seed: int, n_layers: int = 4, n_heads: int = 8, d_model: int = 128
) -> TransformerBridge:
    """The default subject: 4 layers x 8 heads, d_model 128, attention-only, randomly initialised."""
    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_layers=n_layers,
        n_ctx=128,
        d_vocab=128,
        attn_only=True,
        normalization_type=None,
        seed=seed,
    )
    return TransformerBridge.boot_native(cfg).eval()


def family_model(family: str, n_layers: int, n_heads: int, d_model: int, n_ctx: int, seed: int) -> TransformerBridge:
    """A random Hugging Face model of `family`, saved to a temporary directory and loaded as a user would."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test suite's builders
    from hf_models import build_hf_model

    path = Path(tempfile.mkdtemp(prefix=f"bench-{family}-")) / family
    build_hf_model(family, path, n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx, seed=seed)
    return load(str(path))


def load(spec: str) -> TransformerBridge:
    try:
        from induction import load_model
    except ImportError as err:  # circuits stands alone; loading saved models is induction's job
        raise SystemExit(f"--model needs the induction package: {err}") from None
    return load_model(spec).eval()


def induction_task(
    model: TransformerBridge, batch: int, pos: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Clean `[bos?, x, x]`, corrupted `[bos?, x', x]`, and the second-half next-token metric."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    bos = getattr(getattr(model, "induction_info", None), "bos_token_id", None)
    vocab = [t for t in range(model.cfg.d_vocab) if t != bos]
    half = (pos - (bos is not None)) // 2

    def draw() -> torch.Tensor:
        return torch.tensor(vocab, device="cpu")[torch.randint(len(vocab), (batch, half), generator=generator, device="cpu")]

    x, x_other = draw(), draw()
    prefix = torch.full((batch, 1), bos, device="cpu") if bos is not None else torch.empty(batch, 0, dtype=torch.long, device="cpu")
    device = next(model.parameters()).device  # the same tokens on any device (drawn on the CPU)
    clean = torch.cat([prefix, x, x], dim=1).to(device)
    corrupted = torch.cat([prefix, x_other, x], dim=1).to(device)
    start = prefix.shape[1] + half  # first position of the second half

    def metric(logits: torch.Tensor) -> torch.Tensor:
        logprobs = logits[:, start:-1].log_softmax(-1)
        return logprobs.gather(-1, clean[:, start + 1 :, None]).mean()

    return clean, corrupted, metric


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds of each function; every repeat runs each once, in turn, after `warmup`."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", help="a MODEL spec for induction.load_model (default: random 4L x 8H)"
    )
    source.add_argument(
        "--family",
        choices=("gpt2", "neox", "llama", "neo"),
        help="a random Hugging Face model of this family (--layers, --heads, --d-model)",
    )
    parser.add_argument("--layers", type=int, default=4, help="random model: layers")
    parser.add_argument("--heads", type=int, default=8, help="random model: heads per layer")
    parser.add_argument("--d-model", type=int, default=128, help="random model: d_model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--pos", type=int, default=64, help="sequence length (at most 128 on the random model)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.model:
        model = load(args.model)
    elif args.family:
        model = family_model(
            args.family, args.layers, args.heads, args.d_model, max(128, args.pos), args.seed
        )
    else:
        model = random_model(args.seed, args.layers, args.heads, args.d_model)
    clean, corrupted, metric = induction_task(model, args.batch, args.pos, args.seed)

    def transformer_lens_patching() -> torch.Tensor:
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(
                clean, names_filter=lambda name: name.endswith("attn.hook_z")
            )
        return tl_patching.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, metric)

    def exact() -> torch.Tensor:
        return circuits.patch_heads(model, clean, corrupted, metric)

    def attribution() -> torch.Tensor:
        return circuits.attribute_heads(model, clean, corrupted, metric)

    def full_forwards(resume: bool = False) -> sweep.SweepResult:
        """patch_heads' runs through the engine, resumed in-layer or (default) as full forwards."""
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(
                clean, names_filter=lambda name: name.endswith("attn.hook_z")
            )
        runs = [
            (sweep.ZEdit(layer, head),)
            for layer in range(model.cfg.n_layers)
            for head in range(model.cfg.n_heads)
        ]
        return sweep.sweep_head_z(
            model, corrupted, metric, runs, lambda layer: clean_cache[z_name(layer)], resume=resume
        )

    reference, patched, estimate = transformer_lens_patching(), exact(), attribution()
    resumed = full_forwards(resume=True).resumed
    max_diff = float((patched - reference).abs().max())
    assert max_diff <= 1e-5, f"circuits.patch_heads differs from TransformerLens by {max_diff:.2e}"
    with torch.no_grad():
        baseline = float(metric(model(corrupted)))
    correlation = spearman(estimate, patched - baseline)

    times = interleaved_medians(
        {
            "transformer_lens": transformer_lens_patching,
            "patch_heads": exact,
            "sweep_full_forwards": full_forwards,
            "attribute_heads": attribution,
        },
        args.repeats,
        args.warmup,
    )
    results = {
        "model": args.model or (f"random Hugging Face {args.family}" if args.family else "random attention-only"),
        "resumed": resumed,
        "n_layers": int(model.cfg.n_layers),
        "n_heads": int(model.cfg.n_heads),
        "d_model": int(model.cfg.d_model),
        "batch": args.batch,
        "pos": int(clean.shape[1]),
        "seconds": times,
        "speedup_patch_vs_transformer_lens": times["transformer_lens"] / times["patch_heads"],
        "speedup_full_forwards_vs_transformer_lens": times["transformer_lens"]
        / times["sweep_full_forwards"],
        "speedup_attribution_vs_patch": times["patch_heads"] / times["attribute_heads"],
        "max_abs_diff_vs_transformer_lens": max_diff,
        "spearman_attribution_vs_patch": correlation,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "transformer_lens": importlib.metadata.version("transformer-lens"),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    m = results["machine"]
    print(
        f"model: {results['model']} ({results['n_layers']}L x {results['n_heads']}H, "
        f"d_model {results['d_model']}), batch {args.batch}, pos {results['pos']}"
    )
    print(
        f"machine: {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
        f"load {m['load_average_1min']}, torch {m['torch']}, transformer-lens {m['transformer_lens']}"
    )
    for name, seconds in times.items():
        print(f"  {name:<18} {seconds * 1e3:9.1f} ms (median of {args.repeats})")
    print(
        "patch_heads vs TL get_act_patch_attn_head_out_all_pos: "
        f"{results['speedup_patch_vs_transformer_lens']:.2f}x faster, max |diff| {max_diff:.1e}, "
        f"resumed in-layer: {resumed} (full forwards: "
        f"{results['speedup_full_forwards_vs_transformer_lens']:.2f}x)"
    )
    print(
        f"attribute_heads vs patch_heads: {results['speedup_attribution_vs_patch']:.1f}x faster, "
        f"Spearman {correlation:.3f}"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
