"""Train a tiny Hugging Face GPT-2 with plain torch/transformers code, saved as a Trainer saves it.

What `induction track OUT` reads from a Hugging Face Trainer output, made here in minutes on a CPU
and without a download: a `transformers.GPT2LMHeadModel` trained on induction's repeated-segment
stream (`induction.inputs.repeated.sample_batch`: BOS then a random segment tiled to the context, so after its
first occurrence every token is predicted by induction), written as

    OUT/checkpoint-N/config.json, generation_config.json, model.safetensors   (save_pretrained)
    OUT/checkpoint-N/trainer_state.json     transformers' TrainerState (global_step, log_history, ...)
    OUT/checkpoint-N/optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin
                                            the pickles a Trainer writes beside them (torch.save)
    OUT/config.json, model.safetensors, tokenizer.json, ...   the final model and a word-level tokenizer

Checkpoints come at log-spaced steps plus every `save_every` steps, so the plateau before the phase
change and the change itself are both resolved. Each checkpoint folder is written to a hidden
temporary sibling and renamed, so a reader never sees half a checkpoint.

The default recipe -- 2 layers, d_model 64, 4 heads, context 128, vocabulary 128, segments of 16-63
tokens, weights initialised with std 0.05, no dropout, AdamW at lr 2e-3 after a 100-step linear
warm-up, then constant, batch 32, gradients clipped at norm 1 -- formed canonical induction heads
(best prefix-matching 0.05-0.41 at step 400, 0.88-0.93 at 500, 0.99 at 800; copying ~0.9) with seeds
0, 1 and 2, at ~0.13 s of one CPU core per step. GPT-2's own init (std 0.02) left a plateau of
~800 steps and std 0.1 a longer one; segments of at least 16 tokens avoid the positional shortcut
that shorter periods invite (README, "Training recipes").

Usage:
    python scripts/train_hf_gpt2.py --out runs/hf_gpt2          # ~2 min on one CPU core
    induction track runs/hf_gpt2 --plot formation.html           # reads config.json + safetensors only
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from induction.common.fileio import write_json_atomic
from induction.inputs.repeated import ToyDataConfig, sample_batch

TRAINER_PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")
BOS = 0


@dataclass
class HFGPT2Config:
    """A tiny GPT-2 and how to train it (defaults: the recipe in the module docstring).

    Attributes:
        n_layer, n_embd, n_head, n_ctx, vocab_size: the GPT-2 shape (n_ctx is also the sequence length).
        initializer_range: std of the initial weights (GPT2Config's field; its default is 0.02).
        min_segment: the shortest repeated segment of the stream (`ToyDataConfig.min_segment`).
        steps: optimizer updates.
        batch_size: sequences per update.
        lr: peak learning rate (AdamW), reached after `warmup_steps` of linear warm-up, then constant.
        warmup_steps: linear warm-up from 0.
        weight_decay: AdamW's decoupled weight decay.
        n_log_checkpoints: checkpoints at this many log-spaced steps in [1, steps].
        save_every: also a checkpoint every this many steps (0: off); the last step is always saved.
        logging_steps: a trainer_state.json log_history entry (mean loss since the last) every this many steps.
        tokenizer_in_checkpoints: also save the tokenizer in each checkpoint folder (as a Trainer
            given `processing_class` does); it is always saved in OUT.
        save_final: save the final model in OUT itself (as `trainer.save_model()` does).
        seed: seeds the initial weights and the data stream.
    """

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_ctx: int = 128
    vocab_size: int = 128
    initializer_range: float = 0.05
    min_segment: int = 16
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    n_log_checkpoints: int = 20
    save_every: int = 50
    logging_steps: int = 10
    tokenizer_in_checkpoints: bool = False
    save_final: bool = True
    seed: int = 0
    data: ToyDataConfig = field(init=False)

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "n_ctx", "vocab_size", "steps", "batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        self.data = ToyDataConfig(d_vocab=self.vocab_size, seq_len=self.n_ctx, min_segment=self.min_segment,
                                  bos_token_id=BOS)

    def save_steps(self) -> list[int]:
        steps = {self.steps}
        n = self.n_log_checkpoints
        if n > 1:
            steps |= {int(round(math.exp(math.log(self.steps) * i / (n - 1)))) for i in range(n)}
        elif n == 1:
            steps.add(1)
        if self.save_every:
            steps |= set(range(self.save_every, self.steps + 1, self.save_every))
        return sorted(s for s in steps if 1 <= s <= self.steps)


def build_model(cfg: HFGPT2Config):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    config = GPT2Config(
        n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, n_positions=cfg.n_ctx, vocab_size=cfg.vocab_size,
        initializer_range=cfg.initializer_range, bos_token_id=BOS, eos_token_id=BOS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def save_tokenizer(cfg: HFGPT2Config, directory: Path) -> None:
    """A word-level tokenizer: ``<|endoftext|>`` (id 0, BOS = EOS) and ``t1`` ... ``t{vocab-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>"] + [f"t{i}" for i in range(1, cfg.vocab_size)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    special = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=special, eos_token=special,
                            unk_token=special).save_pretrained(str(directory))


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, cfg: HFGPT2Config,
                    log_history: list[dict], tokens_seen: int) -> Path:
    """OUT/checkpoint-<step>/ as a Trainer writes it (module docstring), atomically."""
    from transformers import TrainerState

    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(str(tmp))
        state = TrainerState(
            epoch=step / cfg.steps, global_step=step, max_steps=cfg.steps, logging_steps=cfg.logging_steps,
            save_steps=cfg.save_every or cfg.steps, train_batch_size=cfg.batch_size, num_train_epochs=1,
            num_input_tokens_seen=tokens_seen, log_history=[dict(e) for e in log_history],
        )
        state.save_to_json(str(tmp / "trainer_state.json"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
                   tmp / "rng_state.pth")
        torch.save({k: v for k, v in asdict(cfg).items() if k != "data"}, tmp / "training_args.bin")
        if cfg.tokenizer_in_checkpoints:
            save_tokenizer(cfg, tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def train(cfg: HFGPT2Config, out: str | os.PathLike[str], progress: bool = True) -> Path:
    """Train `cfg`'s GPT-2 on the repeated-segment stream, writing a Trainer-style OUT (module docstring).

    Returns:
        OUT.
    """
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()  # "Writing model shards" at every save
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    save_at = set(cfg.save_steps())
    log_history: list[dict] = []
    window: list[float] = []
    tokens_seen = 0
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        tokens = sample_batch(cfg.data, cfg.batch_size, generator)
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        tokens_seen += tokens.numel()
        window.append(loss.item())
        if step % cfg.logging_steps == 0 or step == cfg.steps:
            log_history.append({"epoch": step / cfg.steps, "grad_norm": float(grad_norm), "learning_rate": lr,
                                "loss": sum(window) / len(window), "num_input_tokens_seen": tokens_seen,
                                "step": step})
            window = []
            if progress:
                print(f"step {step:5d}  loss {log_history[-1]['loss']:.3f}  lr {lr:.2e}  "
                      f"{time.perf_counter() - start:6.1f} s", file=sys.stderr)
        if step in save_at:
            model.eval()
            save_checkpoint(out, step, model, optimizer, scheduler, cfg, log_history, tokens_seen)
            model.train()
    save_tokenizer(cfg, out)
    if cfg.save_final:
        model.save_pretrained(str(out))
    write_json_atomic(out / "train_hf_gpt2.json", {"config": {k: v for k, v in asdict(cfg).items() if k != "data"},
                                                   "data": cfg.data.to_dict(),
                                                   "train_seconds": time.perf_counter() - start})
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the output directory (new or empty)")
    defaults = HFGPT2Config()
    for name, value in asdict(defaults).items():
        if name == "data":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default: {value})")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        cfg = HFGPT2Config(**args)
    except ValueError as exc:
        parser.error(str(exc))
    path = train(cfg, out)
    print(f"wrote {path} (checkpoints at steps {', '.join(map(str, cfg.save_steps()))})", file=sys.stderr)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
