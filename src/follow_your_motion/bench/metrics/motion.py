"""Motion-fidelity scores computed from point tracks of a reference and a generated video.

Two published definitions are implemented, each as its released evaluation code computes it (the quirks
included, behind switches), so that a number produced here can be put next to a number from that paper:

* ``motion_fidelity_dmt`` - Yatim et al., "Space-Time Diffusion Features for Zero-Shot Text-Driven
  Motion Transfer" (DMT, CVPR 2024): pixel coordinates, an identity matrix subtracted from the
  similarity matrix before the max, one-sided matching.
* ``motion_fidelity_det`` - Shi et al., "Decouple and Track" (DeT / MTBench, ICCV 2025): each video's
  coordinates divided by its own frame width/height, frame counts aligned by the release's float32 index
  rule, the normalised start position used as an extra "step", no identity subtraction, and an optional
  trajectory-distance ("frechet") term on track ids drawn as the release draws them.

Both compare unit displacement vectors with a cosine that is defined everywhere: a zero-length
displacement (a static point) is "static"; static vs static counts as cosine 1 and static vs moving
as 0 (the released codes divide by zero and produce NaN there). The full formulas, constants and the
reasons the two scores are not comparable with each other live in ``docs/benchmark.md`` ("Metrics").

Tracks are ``(N, T, 2)`` arrays of ``(x, y)`` positions; an optional ``(N, T)`` boolean visibility mask
(and any non-finite coordinate) marks frames to ignore. A displacement step counts only when both of its
frames are valid; a pair of tracks is compared over the steps valid in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError

ZERO_EPS = 1e-12
"""A displacement whose length is <= this (in the definition's units) is a static point, not a direction."""
STATIC_STATIC_COS = 1.0
"""Cosine assigned to (static, static): neither point moves, so the two agree."""
STATIC_MOVING_COS = 0.0
"""Cosine assigned to (static, moving): no direction to agree with, scored like perpendicular motion."""

DMT_GRID = 55
"""Grid side used by the DMT release (CoTracker ``grid_size=55``, checkpoint cotracker_stride_4_wind_8)."""
DET_GRID = 50
"""Grid side used by the DeT / MTBench release (CoTracker3 ``grid_size=50``, checkpoint scaled_offline)."""
DET_TRAJECTORY_TRACKS = 50
"""Track ids drawn for DeT's trajectory ("frechet") term; the release draws 50, with replacement, from the
generated video's track indices and takes the same ids from both videos."""

DIRECTIONS = ("gen_to_ref", "ref_to_gen")
"""``gen_to_ref``: every generated track takes its best reference track and the mean is over generated
tracks - what both released codes compute. ``ref_to_gen`` is the transpose."""


@dataclass(frozen=True, eq=False)
class MotionFidelity:
    """A motion-fidelity score together with everything needed to reproduce or compare it.

    ``per_track`` holds the best-match similarity of every track the score averages over (the generated
    tracks for ``direction="gen_to_ref"``; ``constants["per_track_of"]`` says which side), so a low score
    can be traced back to the tracks that caused it.
    """

    score: float
    definition: str
    constants: dict
    per_track: np.ndarray
    trajectory_distance: float | None = None
    trajectory_similarity: float | None = None


# ----------------------------------------------------------------------------------------------- inputs


def _check_tracks(tracks: np.ndarray, visible: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 positions (non-finite -> 0) and the (N, T) mask of usable frames."""
    arr = np.asarray(tracks, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise InputError(f"{name} must have shape (N, T, 2) of (x, y) positions, got {arr.shape}")
    if arr.shape[1] < 2:
        raise InputError(f"{name} needs at least 2 frames to have a displacement, got T={arr.shape[1]}")
    valid = np.isfinite(arr).all(axis=2)
    if visible is not None:
        vis = np.asarray(visible)
        if vis.shape != arr.shape[:2]:
            raise InputError(f"{name} visibility must have shape {arr.shape[:2]}, got {vis.shape}")
        valid &= vis.astype(bool)
    return np.where(valid[..., None], arr, 0.0), valid


def _displacements(points: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step displacements (N, T-1, 2) and their validity (both end frames usable)."""
    return points[:, 1:] - points[:, :-1], valid[:, 1:] & valid[:, :-1]


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


# ------------------------------------------------------------------------------------------- similarity


def _cosine_matrix(vec_a: np.ndarray, valid_a: np.ndarray, vec_b: np.ndarray, valid_b: np.ndarray) -> np.ndarray:
    """Mean over commonly valid steps of the zero-safe cosine between vectors of track i (a) and j (b).

    Written as three matrix products (moving-moving dot products, static-static agreements, shared-step
    counts) so a 3025 x 3025 comparison never materialises an (N, M, T) tensor. Pairs without a common
    valid step are NaN ("undefined", never a best match).
    """
    sq_a, sq_b = (vec_a**2).sum(-1), (vec_b**2).sum(-1)
    static_a, static_b = sq_a <= ZERO_EPS**2, sq_b <= ZERO_EPS**2
    unit_a = np.where((valid_a & ~static_a)[..., None], vec_a / np.sqrt(np.where(static_a, 1.0, sq_a))[..., None], 0.0)
    unit_b = np.where((valid_b & ~static_b)[..., None], vec_b / np.sqrt(np.where(static_b, 1.0, sq_b))[..., None], 0.0)
    n_a, n_b = vec_a.shape[0], vec_b.shape[0]
    total = unit_a.reshape(n_a, -1) @ unit_b.reshape(n_b, -1).T
    sa, sb = (valid_a & static_a).astype(np.float64), (valid_b & static_b).astype(np.float64)
    total += STATIC_STATIC_COS * (sa @ sb.T)
    moving_a, moving_b = valid_a.astype(np.float64) - sa, valid_b.astype(np.float64) - sb
    total += STATIC_MOVING_COS * (sa @ moving_b.T + moving_a @ sb.T)
    count = valid_a.astype(np.float64) @ valid_b.astype(np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
    # Rounding can leave |cos| a few ulps above 1; clip so identical tracks score at most exactly 1.
    return np.clip(mean, -1.0, 1.0)


def displacement_similarity(
    ref_tracks: np.ndarray,
    gen_tracks: np.ndarray,
    ref_visible: np.ndarray | None = None,
    gen_visible: np.ndarray | None = None,
) -> np.ndarray:
    """(N_ref, N_gen) mean-over-time cosine of per-step displacement vectors, in the tracks' own units.

    This is the DMT similarity matrix (transposed: rows are reference tracks). Static steps follow the
    documented convention (1 for static/static, 0 for static/moving). Entries are NaN only where the two
    tracks share no valid step, which is why the scores treat NaN as "no candidate" rather than a value.
    """
    ref, ref_valid = _check_tracks(ref_tracks, ref_visible, "ref_tracks")
    gen, gen_valid = _check_tracks(gen_tracks, gen_visible, "gen_tracks")
    if ref.shape[1] != gen.shape[1]:
        raise InputError(f"ref and gen tracks must have the same T, got {ref.shape[1]} and {gen.shape[1]}")
    return _cosine_matrix(*_displacements(ref, ref_valid), *_displacements(gen, gen_valid))


# ------------------------------------------------------------------------------------------------ scoring


def _best_per_row(sim: np.ndarray) -> np.ndarray:
    """Row-wise max ignoring NaN; rows with no defined entry (dropped tracks) are removed."""
    defined = ~np.isnan(sim)
    keep = defined.any(axis=1)
    return np.where(defined, sim, -np.inf)[keep].max(axis=1)


def _one_sided(sim_ref_gen: np.ndarray, direction: str) -> np.ndarray:
    """Best-match values of the averaged side: generated tracks for gen_to_ref, reference for ref_to_gen."""
    best = _best_per_row(sim_ref_gen.T if direction == "gen_to_ref" else sim_ref_gen)
    if best.size == 0:
        raise InputError("no pair of tracks shares a valid step; cannot score (check the visibility masks)")
    return best


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _static_constants() -> dict:
    return {
        "zero_eps": ZERO_EPS,
        "static_static_cos": STATIC_STATIC_COS,
        "static_moving_cos": STATIC_MOVING_COS,
    }


def motion_fidelity_dmt(
    ref_tracks: np.ndarray,
    gen_tracks: np.ndarray,
    *,
    ref_visible: np.ndarray | None = None,
    gen_visible: np.ndarray | None = None,
    identity_quirk: bool = True,
    symmetric: bool = False,
    direction: str = "gen_to_ref",
) -> MotionFidelity:
    """DMT motion-fidelity score from (N, T, 2) pixel tracks of the reference and generated videos.

    With the defaults this is what the DMT release computes: S[j, i] = mean-over-steps cosine between
    generated track j and reference track i, S' = S - I (``identity_quirk``: the pair that started at the
    same grid index is penalised by 1), score = mean over generated tracks of the max over reference
    tracks. ``symmetric=True`` averages that with the other direction (the two-sided form some papers
    describe); ``identity_quirk=False`` gives the clean version. The quirk needs index-aligned track sets,
    i.e. equally many tracks on both sides (it is applied by original index, before tracks are dropped).
    """
    _check_direction(direction)
    ref, ref_valid = _check_tracks(ref_tracks, ref_visible, "ref_tracks")
    gen, gen_valid = _check_tracks(gen_tracks, gen_visible, "gen_tracks")
    if ref.shape[1] != gen.shape[1]:
        raise InputError(f"DMT compares step t with step t: T must match, got {ref.shape[1]} and {gen.shape[1]}")
    sim = _cosine_matrix(*_displacements(ref, ref_valid), *_displacements(gen, gen_valid))
    if identity_quirk:
        if ref.shape[0] != gen.shape[0]:
            raise InputError(
                "identity_quirk subtracts eye(N) and needs equally many, index-aligned tracks "
                f"(got {ref.shape[0]} reference and {gen.shape[0]} generated); pass identity_quirk=False"
            )
        sim = sim - np.eye(ref.shape[0])
    per_track = _one_sided(sim, direction)
    score = float(per_track.mean())
    if symmetric:
        other = "ref_to_gen" if direction == "gen_to_ref" else "gen_to_ref"
        score = 0.5 * (score + float(_one_sided(sim, other).mean()))
    constants = {
        "grid": DMT_GRID,
        "tracker": "CoTracker (cotracker_stride_4_wind_8.pth) in the release",
        "coordinates": "pixels",
        "identity_quirk": identity_quirk,
        "symmetric": symmetric,
        "direction": direction,
        "per_track_of": "gen" if direction == "gen_to_ref" else "ref",
        **_static_constants(),
    }
    return MotionFidelity(score=score, definition="dmt", constants=constants, per_track=_readonly(per_track))


# ------------------------------------------------------------------------------------------------- DeT


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
