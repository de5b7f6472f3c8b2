"""Attention patterns across a training run's checkpoints: one frame per checkpoint for the viewer's
slider (`induction.plots.patterns`), so the induction stripe can be watched forming across the phase change.

Every frame shows the same heads on the same prompts (the scan's, built once from the first checkpoint's
vocabulary and context). File size stays bounded: at most `max_frames` checkpoints (evenly spaced
through the run's list, first and last always in), the first `PatternConfig.n_prompts` prompts,
pooled to `PatternConfig.max_positions`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from induction.heads.patterns import HeadPatterns, PatternConfig, head_patterns
from induction.heads.scores import build_prompts
from induction.inputs.prompts import RepeatedTokensConfig
from induction.loading.runs import is_run_dir
from induction.loading.sources import CheckpointSource, folder_sources, run_sources

TRACK_VIEW = PatternConfig(n_prompts=1, max_positions=64)
"""The default for frames: one prompt pooled to 64 x 64 cells (a few kB per head and checkpoint)."""


def spread(n: int, keep: int) -> list[int]:
    """`keep` indices of 0..n-1, evenly spaced, the first and last always in (all of them when n <= keep)."""
    if keep < 2:
        raise ValueError(f"max_frames must be >= 2, got {keep}")
    if n <= keep:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, keep)})


def checkpoint_sources(run: str | os.PathLike[str]) -> list[CheckpointSource]:
    """The checkpoints of a run directory, a Trainer output or a folder of revisions, by step."""
    run = Path(run)
    return run_sources(run) if is_run_dir(run) else folder_sources(run)[0]


def run_patterns(
    run: str | os.PathLike[str],
    heads: Sequence[tuple[int, int] | str],
    prompts: RepeatedTokensConfig | None = None,
    cfg: PatternConfig = TRACK_VIEW,
    max_frames: int = 24,
    device: str | None = None,
    dtype: str | None = None,
    include: Sequence[int] = (),
) -> list[tuple[str, HeadPatterns]]:
    """("step N", the heads' patterns at checkpoint N) for up to `max_frames` checkpoints of `run`.

    Args:
        run: a run directory (`induction train`), a Trainer output or a folder of revisions.
        heads: (layer, head) pairs or "LxHy" strings.
        prompts: the prompt settings (`build_prompts`; None: the scan's defaults).
        cfg: prompts shown and pooling (module docstring).
        max_frames: most checkpoints shown (module docstring).
        device, dtype: where and in what precision the checkpoints run (`induction.loading.devices`).
        include: steps shown in any case, beyond `max_frames` (e.g. every checkpoint of the phase change).
    """
    sources = checkpoint_sources(run)
    keep = set(spread(len(sources), max_frames)) | {i for i, s in enumerate(sources) if s.step in set(include)}
    chosen = [sources[i] for i in sorted(keep)]
    frames: list[tuple[str, HeadPatterns]] = []
    tokens = None
    for src in chosen:
        model = replace(src.ref, device=device, dtype=dtype).load()
        if tokens is None:
            tokens = build_prompts(model, prompts or RepeatedTokensConfig())
        frames.append((f"step {src.step}", head_patterns(model, heads, tokens, cfg)))
        del model
    return frames


def mark_window(frames: list[tuple[str, HeadPatterns]], start_step: int, end_step: int,
                note: str = " (phase change)") -> list[tuple[str, HeadPatterns]]:
    """The frames with `note` added to the labels of the steps inside [start_step, end_step] (labels "step N")."""
    return [(label + (note if start_step <= int(label.split()[-1]) <= end_step else ""), p) for label, p in frames]
