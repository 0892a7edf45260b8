"""Sparse motion sampling and adaptive RoPE positions for stage 3.

Which K of the F cached latent frames a step trains on is a pure function of (seed, step), so a resumed
run draws exactly the frames the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from typing import get_args

import torch

from ..config import RopeMode, Sampling

STRATEGIES: tuple[str, ...] = get_args(Sampling)
ROPE_MODES: tuple[str, ...] = get_args(RopeMode)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """An independent, reproducible random stream for one training step."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 8 + stream)


def sample_frames(total: int, keep: int, strategy: str, seed: int, step: int) -> torch.Tensor:
    """Sorted indices of the `keep` latent frames (of `total`) used at `step`.

    uniform-random-phase: evenly spaced (stride total/keep) with an offset; within every run of
      ceil(stride) steps (an epoch) each offset is used once, in a random order, so every frame is seen
      at least once per epoch (exactly once when K divides F).
    uniform: the same evenly spaced frames every step (offset 0).
    random: a fresh random subset every step.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown frame sampling {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if keep < 1:
        raise ValueError(f"keep_frames must be >= 1 (got {keep})")
    if keep >= total:
        return torch.arange(total)
    stride = total / keep
    if strategy == "random":
        return torch.randperm(total, generator=step_generator(seed, step, 1))[:keep].sort().values
    offset = 0
    if strategy == "uniform-random-phase":
        period = math.ceil(stride)
        epoch, position = divmod(step, period)
        offset = int(torch.randperm(period, generator=step_generator(seed, epoch, 2))[position])
    return torch.tensor([offset + math.floor(i * stride) for i in range(keep)])


def rope_positions(indices: torch.Tensor, total: int, mode: str) -> torch.Tensor | None:
    """Temporal RoPE positions for the kept frames; None means the stock positions 0..K-1.

    index: each kept frame keeps its original latent index (exact);
    scaled: the paper's formula F/2 + (F/K)(i - K/2) = i * F / K;
    none: 0..K-1, the ablation without adaptive RoPE."""
    if mode not in ROPE_MODES:
        raise ValueError(f"unknown rope mode {mode!r} (choose from {', '.join(ROPE_MODES)})")
    keep = len(indices)
    if mode == "index":
        return indices.to(torch.float64)
    if mode == "scaled":
        return torch.arange(keep, dtype=torch.float64) * (total / keep)
    return None
