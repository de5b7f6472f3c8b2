"""Print the memory plans of scan, patch (exact) and patch (attribution) at default settings for a few
published configs on one 80 GB GPU in bfloat16 (the README's memory table). No weights are needed:
the configs are written out here (the fields that size each model)."""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

from induction.jobs import PatchConfig, plan_memory

CONFIGS = {
    "GPT-2 small": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
                    "n_positions": 1024},
    "Pythia-1.4B": {"model_type": "gpt_neox", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "intermediate_size": 8192, "vocab_size": 50304, "max_position_embeddings": 2048},
    "Llama-3-8B": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
                   "max_position_embeddings": 8192},
    "Qwen2-7B": {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                 "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
                 "max_position_embeddings": 131072},
}
GPU_BYTES = 80 * 10**9
DTYPE = "bfloat16"


def gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def main() -> None:
    print("| model | parameters | weights GiB | scan peak GiB | patch (exact) peak GiB | attribution peak GiB "
          "(layers per backward) |")
    print("|---|---|---|---|---|---|")
    for name, config in CONFIGS.items():
        with tempfile.TemporaryDirectory() as directory:  # a config-only model directory: no weights
            (Path(directory) / "config.json").write_text(json.dumps(config))
            plan = partial(plan_memory, directory, device="cuda", dtype=DTYPE, available=GPU_BYTES)
            scan, exact = plan("scan"), plan("patch")
            attr = plan("patch", PatchConfig(method="attribution"))
        print(f"| {name} | {scan.parameter_count:,} | {gib(scan.parameter_bytes)} | {gib(scan.peak_bytes)} | "
              f"{gib(exact.peak_bytes)} | {gib(attr.peak_bytes)} ({attr.layers_per_backward} of "
              f"{config_layers(config)}) |")


def config_layers(config: dict) -> int:
    return int(config.get("num_hidden_layers") or config.get("n_layer"))


if __name__ == "__main__":
    main()
