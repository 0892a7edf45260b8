"""Attention motion flow (AMF, DiTFlow): where each video token's attention says it went in every other frame.

For frames i and j, token p of frame i attends over the tokens of frame j alone (a softmax over frame j's
tokens of the scaled q k^T scores, averaged over the heads before the softmax, as DiTFlow's release does); the
attention-weighted mean of their grid positions minus p's own is p's displacement from i to j, in token cells.
A clip is then a (frames, frames, tokens per frame, 2) field of (row, column) displacements.

Memory: the S x S score map is never held. Queries go in chunks of `chunk` tokens, each against all keys
(chunk x S scores), and with autograd on, each chunk is recomputed in the backward pass instead of kept, so
guidance holds one chunk's scores at a time.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint


def grid_positions(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """(rows * cols, 2) float (row, column) of each token of a frame, in the frame-major token order."""
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij")
    return torch.stack([r.flatten(), c.flatten()], dim=-1).float()


def _chunk_flow(q: torch.Tensor, k_frames: torch.Tensor, positions: torch.Tensor, own: torch.Tensor,
                temperature: float, hard: bool) -> torch.Tensor:
    """Displacements (B, c, F, 2) of c query tokens (B, c, H, D) to every frame of keys (B, F, N, H, D)."""
    heads, dim = q.shape[2], q.shape[3]
    scores = torch.einsum("bchd,bfnhd->bcfn", q, k_frames) / (heads * math.sqrt(dim))  # heads averaged
    weights = torch.softmax(temperature * scores, dim=-1) if not hard else None
    expected = positions[scores.argmax(dim=-1)] if weights is None else weights @ positions
    return expected - own[None, :, None, :]


def attention_motion_flow(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int, int], temperature: float = 2.0,
                          chunk: int = 1024, hard: bool = False) -> torch.Tensor:
    """The AMF (B, F, F, N, 2) of video-token queries and keys (B, S, H, D) on a (frames, rows, cols) grid:
    [b, i, j, p] is token p of frame i's expected displacement (rows, columns) into frame j. `hard`: the
    displacement to the best-matching token instead of the expectation (not differentiable)."""
    frames, rows, cols = grid
    batch, tokens, heads, dim = q.shape
    per_frame = rows * cols
    if tokens != frames * per_frame or k.shape != q.shape:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} do not hold the tokens of a {grid} grid")
    positions = grid_positions(rows, cols, q.device).to(q.dtype)
    k_frames = k.view(batch, frames, per_frame, heads, dim)
    parts = []
    for start in range(0, tokens, chunk):
        own = positions[torch.arange(start, min(start + chunk, tokens), device=q.device) % per_frame]
        args = (q[:, start:start + chunk], k_frames, positions, own, temperature, hard)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            parts.append(checkpoint(_chunk_flow, *args, use_reentrant=False))
        else:
            parts.append(_chunk_flow(*args))
    flow = torch.cat(parts, dim=1)  # (B, S, F, 2): query token, target frame
    return flow.view(batch, frames, per_frame, frames, 2).permute(0, 1, 3, 2, 4)


def amf_distance(flow: torch.Tensor, reference: torch.Tensor, moving_only: bool = True) -> torch.Tensor:
    """Mean squared distance of two AMFs; `moving_only`: over the reference's non-zero displacements only (as
    DiTFlow's release, so a static background does not outweigh what moves), all of them if none moves. Weighted
    by a mask rather than selected, so no value is read on the host: no device sync per inner step, and it runs on
    fake tensors (`fym plan`)."""
    squared = (flow - reference).square()
    if not moving_only:
        return squared.mean()
    moving = (reference.norm(dim=-1, keepdim=True) > 0).to(squared.dtype)
    count = moving.sum() * flow.shape[-1]
    return torch.where(count > 0, (squared * moving).sum() / count.clamp_min(1), squared.mean())
