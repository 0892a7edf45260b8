"""DeT's motion fidelity (Shi et al., "Decouple and Track", ICCV 2025 / MTBench), as its released evaluation
code computes it: each video's coordinates divided by its own frame width and height, frame counts aligned by the
release's float32 index rule, the normalised start position as an extra step, no identity subtraction, and an
optional trajectory-distance ("frechet") term on track ids drawn as the release draws them. The track checks and
the cosine it shares with DMT's definition are in ``motion``.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from .motion import (
    MotionFidelity,
    _check_direction,
    _check_tracks,
    _cosine_matrix,
    _displacements,
    _one_sided,
    _readonly,
    _static_constants,
)

DET_GRID = 50
"""Grid side used by the DeT / MTBench release (CoTracker3 ``grid_size=50``, checkpoint scaled_offline)."""
DET_TRAJECTORY_TRACKS = 50
"""Track ids drawn for DeT's trajectory ("frechet") term; the release draws 50, with replacement, from the
generated video's track indices and takes the same ids from both videos."""


def det_frame_indices(n_long: int, n_short: int) -> np.ndarray:
    """Frames of an ``n_long``-frame video that DeT's release keeps to compare it with an ``n_short``-frame one.

    The release takes ``torch.linspace(0, n_long - 1, n_short)`` (float32, on the CPU) and truncates it to
    int32. Computed here without torch, bit for bit as torch's vectorised CPU kernels (AVX2 / AVX512, what
    any current x86-64 machine dispatches to) compute it: step = float32((n_long - 1) / (n_short - 1)); the
    first ``n_short // 2`` values are ``step * i`` and the others ``(n_long - 1) - step * (n_short - 1 - i)``,
    each rounded to float32 once (the kernel is compiled with fused multiply-adds); then truncated. That is
    not ``floor(linspace)`` in exact arithmetic: 17 -> 15 keeps frame 7 where exact arithmetic gives 8
    (float32 value 7.9999995), 61 -> 45 keeps frames 15 and 30 where float64 ``np.linspace`` gives 14 and 29.
    (torch's non-vectorised ``ATEN_CPU_CAPABILITY=default`` kernel rounds twice and keeps frame 8 there.)
    """
    n_long, n_short = int(n_long), int(n_short)
    if not 1 <= n_short <= n_long:
        raise InputError(f"need 1 <= n_short <= n_long, got n_long={n_long}, n_short={n_short}")
    if n_short == 1:
        return np.zeros(1, dtype=np.int64)  # torch.linspace(a, b, 1) is [a]
    end = np.float32(n_long - 1)
    step = float(end / np.float32(n_short - 1))  # float32 division, correctly rounded
    i = np.arange(n_short, dtype=np.float64)
    # float32 * small integer is exact in float64 and so is the subtraction: one rounding, as in an FMA
    exact = np.where(i < n_short // 2, step * i, float(end) - step * (n_short - 1 - i))
    return np.trunc(exact.astype(np.float32)).astype(np.int64)


def _resample_frames(points: np.ndarray, valid: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """DeT's frame alignment: the longer video keeps frames ``det_frame_indices(T, n_frames)``."""
    idx = det_frame_indices(points.shape[1], n_frames)
    return points[:, idx], valid[:, idx]


def det_trajectory_ids(n_gen: int, k: int, seed: int) -> np.ndarray:
    """The ``k`` track ids DeT's "frechet" term compares: drawn uniformly with replacement from
    ``0 .. n_gen - 1`` by ``torch.randint`` with a CPU generator seeded ``seed`` (the release makes the same call
    on torch's global, unseeded generator; ``torch.manual_seed(seed)`` right before it gives these ids)."""
    import torch  # only this optional term needs it

    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, int(n_gen), size=(int(k),), generator=generator).numpy().astype(np.int64)


def trajectory_distance_matrix(
    a: np.ndarray, valid_a: np.ndarray, b: np.ndarray, valid_b: np.ndarray, max_elements: int = 4_000_000
) -> np.ndarray:
    """D[i, j] = mean over valid frame pairs (t, s) of |a_i(t) - b_j(s)|: DeT's "frechet" distance.

    Despite its name in the DeT release it is not a Frechet distance: it averages the distance between
    every frame of one trajectory and every frame of the other (SciPy ``cdist(...).mean()``), so it mostly
    measures how far apart the two paths lie. The two sides may have different frame counts (the release
    aligns them first; ``motion_fidelity_det`` does). Rows of ``a`` are processed in chunks of at most
    ``max_elements`` frame pairs to bound memory. Pairs without a valid frame on both sides are NaN.
    """
    out = np.full((a.shape[0], b.shape[0]), np.nan)
    vb = valid_b.astype(np.float64)
    chunk = max(1, max_elements // max(1, a.shape[1] * b.shape[0] * b.shape[1]))
    for start in range(0, a.shape[0], chunk):
        pa, va = a[start : start + chunk], valid_a[start : start + chunk].astype(np.float64)
        # (ca, Ta, 1, 1, 2) - (1, 1, nb, Tb, 2) -> (ca, Ta, nb, Tb)
        dist = np.sqrt(((pa[:, :, None, None, :] - b[None, None, :, :, :]) ** 2).sum(-1))
        weight = va[:, :, None, None] * vb[None, None, :, :]
        count = weight.sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + chunk] = np.where(
                count > 0, (dist * weight).sum(axis=(1, 3)) / np.maximum(count, 1.0), np.nan
            )
    return out


def _check_size(size: tuple[int, int] | None, name: str) -> tuple[int, int]:
    if size is None:
        raise InputError(f"{name} is needed: pass size=(H, W) for both videos or ref_size and gen_size")
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise InputError(f"{name} must be a positive (H, W), got {size}")
    return height, width


def motion_fidelity_det(
    ref_tracks: np.ndarray,
    gen_tracks: np.ndarray,
    *,
    size: tuple[int, int] | None = None,
    ref_size: tuple[int, int] | None = None,
    gen_size: tuple[int, int] | None = None,
    ref_visible: np.ndarray | None = None,
    gen_visible: np.ndarray | None = None,
    include_initial_position: bool = True,
    direction: str = "gen_to_ref",
    with_trajectory_distance: bool = False,
    trajectory_tracks: int | None = DET_TRAJECTORY_TRACKS,
    trajectory_seed: int = 0,
) -> MotionFidelity:
    """DeT / MTBench motion-fidelity score from (N, T, 2) pixel tracks of two videos.

    Each video's tracks are divided by that video's own frame width and height, as in the release:
    ``ref_size`` and ``gen_size`` are (H, W) of the frames each set was tracked in; ``size`` gives one
    (H, W) for both (either of the other two overrides it for its side). Then, as in the DeT release: when
    T differs the longer video keeps frames ``det_frame_indices(T_long, T_short)``; each track becomes the
    sequence [p(0), p(1) - p(0), ..., p(T-1) - p(T-2)] (``include_initial_position``: the normalised start
    position is compared like a step); S[j, i] = mean cosine over that sequence; no identity subtraction;
    score = mean over generated tracks of the max over reference tracks (``direction``).

    ``with_trajectory_distance`` adds DeT's "frechet" term. With ``trajectory_tracks = k`` (release: 50) it
    draws k ids with replacement from the generated video's track indices (``det_trajectory_ids``, seeded
    ``trajectory_seed``) and takes those same ids from both videos, so the two track sets must be index-aligned
    (equally many tracks, as when both are tracked on one grid); ``None`` compares all tracks with all.
    ``trajectory_distance`` = mean over the drawn tracks of the averaged side (duplicates counted) of the
    smallest D[j, i] (``trajectory_distance_matrix``, normalised units) and ``trajectory_similarity`` = mean of
    max 1 / (1 + D), the term the release averages 50/50 with the cosine score. Drawn tracks that are masked
    out entirely take no part (the release has no masks).
    """
    _check_direction(direction)
    ref_hw = _check_size(ref_size if ref_size is not None else size, "ref_size")
    gen_hw = _check_size(gen_size if gen_size is not None else size, "gen_size")
    ref, ref_valid = _check_tracks(ref_tracks, ref_visible, "ref_tracks")
    gen, gen_valid = _check_tracks(gen_tracks, gen_visible, "gen_tracks")
    ref = ref * np.array([1.0 / ref_hw[1], 1.0 / ref_hw[0]])
    gen = gen * np.array([1.0 / gen_hw[1], 1.0 / gen_hw[0]])
    n_frames = min(ref.shape[1], gen.shape[1])
    if ref.shape[1] != n_frames:
        ref, ref_valid = _resample_frames(ref, ref_valid, n_frames)
    if gen.shape[1] != n_frames:
        gen, gen_valid = _resample_frames(gen, gen_valid, n_frames)

    def sequence(points: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vec, ok = _displacements(points, valid)
        if include_initial_position:
            vec = np.concatenate([points[:, :1], vec], axis=1)
            ok = np.concatenate([valid[:, :1], ok], axis=1)
        return vec, ok

    sim = _cosine_matrix(*sequence(ref, ref_valid), *sequence(gen, gen_valid))
    per_track = _one_sided(sim, direction)

    traj_distance = traj_similarity = None
    if with_trajectory_distance:
        if trajectory_tracks is None:
            ri, gi = np.arange(ref.shape[0]), np.arange(gen.shape[0])
        else:
            if ref.shape[0] != gen.shape[0]:
                raise InputError(
                    "the trajectory term takes the same drawn track ids from both videos and needs equally many, "
                    f"index-aligned tracks (got {ref.shape[0]} reference and {gen.shape[0]} generated); "
                    "pass trajectory_tracks=None to compare all tracks"
                )
            ri = gi = det_trajectory_ids(gen.shape[0], trajectory_tracks, trajectory_seed)
        dist = trajectory_distance_matrix(ref[ri], ref_valid[ri], gen[gi], gen_valid[gi])
        rows = dist.T if direction == "gen_to_ref" else dist
        defined = ~np.isnan(rows)
        keep = defined.any(axis=1)
        if not keep.any():
            raise InputError("no pair of tracks has a valid frame; cannot compute the trajectory distance")
        nearest = np.where(defined, rows, np.inf)[keep].min(axis=1)
        traj_distance = float(nearest.mean())
        traj_similarity = float((1.0 / (1.0 + nearest)).mean())

    sampled = with_trajectory_distance and trajectory_tracks is not None
    constants = {
        "grid": DET_GRID,
        "tracker": "CoTracker3 (scaled_offline.pth) in the release",
        "coordinates": "normalised by each video's own frame size (x / W, y / H)",
        "ref_size_hw": ref_hw,
        "gen_size_hw": gen_hw,
        "size_hw": ref_hw if ref_hw == gen_hw else None,
        "include_initial_position": include_initial_position,
        "identity_quirk": False,
        "symmetric": False,
        "direction": direction,
        "per_track_of": "gen" if direction == "gen_to_ref" else "ref",
        "frames": {"ref": int(np.shape(ref_tracks)[1]), "gen": int(np.shape(gen_tracks)[1]), "compared": n_frames},
        "frame_alignment": "int32(float32 torch.linspace(0, T_long - 1, T_short)), as the release",
        "trajectory_tracks": trajectory_tracks if with_trajectory_distance else None,
        "trajectory_track_choice": (
            None if not with_trajectory_distance
            else "all tracks" if not sampled
            else "ids drawn with replacement from the generated tracks (torch.randint), same ids for both videos"
        ),
        "trajectory_seed": trajectory_seed if sampled else None,
        **_static_constants(),
    }
    return MotionFidelity(
        score=float(per_track.mean()),
        definition="det",
        constants=constants,
        per_track=_readonly(per_track),
        trajectory_distance=traj_distance,
        trajectory_similarity=traj_similarity,
    )
