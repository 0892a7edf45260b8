"""Motion-fidelity scores computed from point tracks of a reference and a generated video.

Two published definitions are implemented, each as its released evaluation code computes it (the quirks
included, behind switches), so that a number produced here can be put next to a number from that paper:

* ``motion_fidelity_dmt`` - Yatim et al., "Space-Time Diffusion Features for Zero-Shot Text-Driven
  Motion Transfer" (DMT, CVPR 2024): pixel coordinates, an identity matrix subtracted from the
  similarity matrix before the max, one-sided matching.
* ``motion_fidelity_det`` (``motion_det``) - Shi et al., "Decouple and Track" (DeT / MTBench, ICCV 2025):
  each video's coordinates divided by its own frame width/height, frame counts aligned by the release's float32 index
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
