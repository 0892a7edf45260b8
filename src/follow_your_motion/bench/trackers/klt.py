"""Grid point tracking with OpenCV's pyramidal Lucas-Kanade, the benchmark's always-available tracker.

The published motion-fidelity numbers use CoTracker, which needs weights this project cannot download;
KLT needs nothing but OpenCV, so the benchmark can always run. It is a weaker tracker (frame-to-frame
chaining drifts, no re-detection after occlusion), so its scores are only comparable with other KLT
scores - see docs/benchmark.md.

Points start on a regular grid in frame 0 and are chained frame to frame. Each step is checked
forward-backward: the tracked point is tracked back to the previous frame, and if it does not land within
``FB_THRESHOLD`` px of where it started (or LK reports failure, or it leaves the frame) the point is lost:
it is invisible, its position NaN, from that frame on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ...errors import InputError

LK_WIN_SIZE = (21, 21)
"""Search window per pyramid level, px: big enough for smooth textures, small enough to stay local."""
LK_MAX_LEVEL = 3
"""Pyramid levels above the base: with a 21 px window, motions up to ~80 px per frame are reachable."""
LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)
"""Stop after 30 iterations or an update below 0.01 px."""
LK_MIN_EIG_THRESHOLD = 1e-4
"""OpenCV's default: windows whose gradient matrix is this flat are reported as failures."""
FB_THRESHOLD = 1.0
"""Forward-backward error (px) above which a point is declared lost."""
MARGIN_FRACTION = 1.0 / 64.0
"""Default grid margin as a fraction of max(H, W), keeping points off the border where windows are cut."""


@dataclass
class Tracks:
    """Point tracks of one video: positions, visibility and how they were made (for the result record)."""

    points: np.ndarray  # (N, T, 2) float32, (x, y) pixels; NaN where not visible (KLT)
    visible: np.ndarray  # (N, T) bool
    grid: int
    tracker: str
    constants: dict = field(default_factory=dict)


def grid_axis(length: int, grid: int, margin: float) -> np.ndarray:
    """Point coordinates along one axis of ``length`` pixels.

    ``grid`` evenly spaced positions from ``margin`` to ``length - 1 - margin``; when fewer whole pixels
    than ``grid`` fit in that span, one point per pixel (every integer position in it) instead, so a tiny
    frame never gets several points crowded into the same pixel.
    """
    lo, hi = float(margin), float(length - 1) - float(margin)
    if hi < lo:
        raise InputError(f"margin {margin} leaves no room on an axis of {length} px")
    first, last = int(np.ceil(lo)), int(np.floor(hi))
    if last - first + 1 < grid:
        return np.arange(first, last + 1, dtype=np.float64)
    return np.linspace(lo, hi, grid)


def grid_points(height: int, width: int, grid: int, margin: float) -> np.ndarray:
    """(N, 2) float32 (x, y) grid, row by row (y outer, x inner)."""
    xs, ys = grid_axis(width, grid, margin), grid_axis(height, grid, margin)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _gray(frames: np.ndarray) -> list[np.ndarray]:
    if frames.ndim == 4 and frames.shape[3] == 3:
        return [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    if frames.ndim == 4 and frames.shape[3] == 1:
        return [np.ascontiguousarray(f[..., 0]) for f in frames]
    if frames.ndim == 3:
        return [np.ascontiguousarray(f) for f in frames]
    raise InputError(f"frames must be (T, H, W, 3) RGB (or (T, H, W) gray), got shape {frames.shape}")


def constants(margin: float) -> dict:
    """The pinned KLT settings, as recorded with every result."""
    return {
        "win_size": LK_WIN_SIZE,
        "max_level": LK_MAX_LEVEL,
        "criteria": {"max_iter": LK_CRITERIA[1], "eps_px": LK_CRITERIA[2]},
        "min_eig_threshold": LK_MIN_EIG_THRESHOLD,
        "fb_threshold_px": FB_THRESHOLD,
        "margin_px": float(margin),
        "chaining": "frame to frame; a lost point stays lost",
    }


def track_grid(frames: np.ndarray, grid: int = 50, margin: float | None = None) -> Tracks:
    """Track a ``grid`` x ``grid`` lattice of frame-0 points through (T, H, W, 3) uint8 RGB ``frames``.

    ``margin`` (px) defaults to ``MARGIN_FRACTION * max(H, W)``. Positions are sub-pixel (float32).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frames.dtype}")
    if grid < 1:
        raise InputError(f"grid must be >= 1, got {grid}")
    gray = _gray(frames)
    n_frames, (height, width) = len(gray), gray[0].shape
    if margin is None:
        margin = MARGIN_FRACTION * max(height, width)
    start = grid_points(height, width, grid, margin)
    n_points = start.shape[0]
    points = np.full((n_points, n_frames, 2), np.nan, dtype=np.float32)
    visible = np.zeros((n_points, n_frames), dtype=bool)
    points[:, 0], visible[:, 0] = start, True
    lk = {
        "winSize": LK_WIN_SIZE,
        "maxLevel": LK_MAX_LEVEL,
        "criteria": LK_CRITERIA,
        "minEigThreshold": LK_MIN_EIG_THRESHOLD,
    }
    alive = np.ones(n_points, dtype=bool)
    for t in range(n_frames - 1):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        p0 = np.ascontiguousarray(points[idx, t]).reshape(-1, 1, 2)
        p1, st_fwd, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[t + 1], p0, None, **lk)
        p0_back, st_bwd, _ = cv2.calcOpticalFlowPyrLK(gray[t + 1], gray[t], p1, None, **lk)
        p1, p0_back = p1.reshape(-1, 2), p0_back.reshape(-1, 2)
        fb_error = np.linalg.norm(p0_back - p0.reshape(-1, 2), axis=1)
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= width - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= height - 1)
        ok = (st_fwd.ravel() == 1) & (st_bwd.ravel() == 1) & np.isfinite(p1).all(1) & inside
        ok &= fb_error <= FB_THRESHOLD
        points[idx[ok], t + 1] = p1[ok]
        visible[idx[ok], t + 1] = True
        alive[idx[~ok]] = False
    return Tracks(points=points, visible=visible, grid=grid, tracker="klt", constants=constants(margin))
