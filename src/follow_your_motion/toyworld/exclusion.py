"""Keeping evaluation motions out of pretraining: the distance from a path to the evaluation paths.

Distance between two paths of the same frames: each is centred on its mean position (transfer is judged on
the shape of a path, not where it lies: ``metrics.centred_error``), and the distance is the largest gap
between them over the frames, in fractions of the frame's width (x) and height (y):
``max_t |(p_t - mean p) - (q_t - mean q)|``. The distance to the evaluation paths is the smallest such
distance to any path of ``evaluation_paths``, which holds, for the same frame count,

- every held-out program of the renderer (``render.HELDOUT_PROGRAMS`` but grow-shrink, whose centroid stands
  still: its motion is the size, which pretraining paths never change) at 128 phases, the bounce at
  33 x 33 anchors, 5 sizes (0.2-0.3) and its 4 diagonals: the programs as the suites draw them;
- the first ``ROBUST_CLIPS`` clips of the robustness set (``robustness.make_set``, default seed), resampled
  from their own length to this one;

each also mirrored left-right, up-down, both ways, and played backwards (8 versions), because a model that
knows a mirrored or reversed evaluation path knows most of it. Pretraining draws lie at least
``EXCLUSION_DISTANCE`` from all of them (``paths.draw_prior_path``); an evaluation path drawn with phases,
anchors or sizes between the grid's lies within ``GRID_TOLERANCE`` of one of them (tested), so pretraining
stays at least ``EXCLUSION_DISTANCE - GRID_TOLERANCE`` from every evaluation path the renderer can draw.
A new evaluation family must be added here.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .render import HELDOUT_PROGRAMS, ObjectSpec, SceneSpec, object_centres
from .robustness import make_clip

EXCLUSION_DISTANCE = 0.05  # of the frame (1.6 px at 32 px): the straight diagonal pans come within 0.0505 (tested)
GRID_TOLERANCE = 0.02  # of the frame: how far an off-grid evaluation path may lie from the grid's (tested)
ROBUST_CLIPS = 24  # the robustness set as benchmarked (its default size); a larger set must raise this
_PHASES = 128
_ANCHORS = 33
_BOUNCE_SIZES = (0.2, 0.225, 0.25, 0.275, 0.3)
_FRAME = 32  # the renderer's programs are drawn on a 32 x 32 frame (their offsets scale with the frame)


def centred(path: np.ndarray) -> np.ndarray:
    """(..., T, 2) paths minus their mean over frames."""
    return path - path.mean(axis=-2, keepdims=True)


def _versions(paths: np.ndarray) -> np.ndarray:
    """(8N, T, 2): the paths, mirrored left-right, up-down and both ways, each also played backwards."""
    flips = np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]], dtype=np.float64)
    mirrored = (paths[None] * flips[:, None, None, :]).reshape(-1, *paths.shape[1:])
    return np.concatenate([mirrored, mirrored[:, ::-1]])


def _program_paths(num_frames: int) -> list[np.ndarray]:
    out = []
    for program in HELDOUT_PROGRAMS:
        if program not in ("grow-shrink", "bounce"):
            out += [_centres(ObjectSpec("circle", "red", program, size=0.2, phase=k / _PHASES), num_frames)
                    for k in range(_PHASES)]
    return out


def _centres(o: ObjectSpec, num_frames: int) -> np.ndarray:
    return object_centres(SceneSpec((o,), num_frames, _FRAME, _FRAME))[0] / _FRAME


def _bounce_paths(num_frames: int) -> np.ndarray:
    """The bounce on the grid of sizes, anchors and its 4 diagonals (which hold its mirror images). Its x and y
    move independently (each reflects off its own walls), so the renderer draws each axis once per size, anchor
    and direction, and the grid is their product."""
    out, grid = [], np.linspace(0.0, 1.0, _ANCHORS)
    for size in _BOUNCE_SIZES:
        for quadrant in range(4):
            axes = np.stack([_centres(ObjectSpec("circle", "red", "bounce", size, (a, a), (quadrant + 0.5) / 4),
                                      num_frames) for a in grid])  # (anchor, T, 2)
            xs, ys = np.broadcast_arrays(axes[:, None, :, :1], axes[None, :, :, 1:])
            out.append(np.concatenate([xs, ys], axis=-1).reshape(-1, num_frames, 2))
    return np.concatenate(out)


def _robust_paths(num_frames: int) -> list[np.ndarray]:
    out, u = [], np.linspace(0.0, 1.0, num_frames)
    for index in range(ROBUST_CLIPS):
        clip = make_clip(index)
        height, width = clip.frames.shape[1:3]
        own = np.linspace(0.0, 1.0, len(clip.track))
        out.append(np.stack([np.interp(u, own, clip.track[:, 0]) / width,
                             np.interp(u, own, clip.track[:, 1]) / height], 1))
    return out


@lru_cache(maxsize=4)
def evaluation_paths(num_frames: int) -> np.ndarray:
    """(N, num_frames, 2) centred evaluation paths (fractions of the frame), in all 8 versions; built once per
    frame count."""
    bounce = _bounce_paths(num_frames)
    return centred(np.concatenate([_versions(np.stack(_program_paths(num_frames) + _robust_paths(num_frames))),
                                   bounce, bounce[:, ::-1]]))


def _probe_frames(num_frames: int) -> list[int]:
    return sorted({0, num_frames // 2, num_frames - 1})


@lru_cache(maxsize=4)
def _probes(num_frames: int) -> np.ndarray:
    """The evaluation paths at `_probe_frames` only, contiguous: the quick lower bound of every distance."""
    return np.ascontiguousarray(evaluation_paths(num_frames)[:, _probe_frames(num_frames)])


def distance_to_evaluation(path: np.ndarray, cap: float = np.inf) -> float:
    """The smallest distance (module docstring) from a (T, 2) path, fractions of the frame, to an evaluation
    path of the same frame count, or `cap` if that is smaller. Exact: the gaps at the first, middle and last
    frames bound each distance from below, and only the paths bounded below `cap` are compared frame by frame
    (with a finite cap, few are)."""
    path = centred(np.asarray(path, np.float64))
    frames = _probe_frames(len(path))
    near = np.linalg.norm(_probes(len(path)) - path[frames], axis=-1).max(axis=-1) < cap
    gaps = np.linalg.norm(evaluation_paths(len(path))[near] - path, axis=-1).max(axis=-1)
    return float(gaps.min(initial=cap))
