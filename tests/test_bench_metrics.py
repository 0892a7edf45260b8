"""Motion-fidelity metrics: hand-computed tiny cases for both definitions, quirks, static points, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from follow_your_motion.bench.metrics import (
    displacement_similarity,
    motion_fidelity_det,
    motion_fidelity_dmt,
    trajectory_distance_matrix,
)

R2 = math.sqrt(2.0)


def tracks_from_steps(start, steps) -> np.ndarray:
    """(N, T, 2) positions from per-track starts (N, 2) and steps (N, T-1, 2)."""
    start = np.asarray(start, dtype=np.float64)[:, None, :]
    steps = np.asarray(steps, dtype=np.float64)
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)


def smooth_set(n_side: int = 6, n_frames: int = 8, seed: int = 0) -> np.ndarray:
    """A grid of points all following one quarter-circle path (plus tiny jitter), in a 128 x 160 frame."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.linspace(20, 140, n_side), np.linspace(20, 108, n_side))
    start = np.stack([gx.ravel(), gy.ravel()], 1)
    theta = np.linspace(0.0, np.pi / 2, n_frames)
    path = 10.0 * np.stack([np.sin(theta), 1.0 - np.cos(theta)], 1)  # turns from +x to +y
    jitter = rng.normal(scale=0.05, size=(start.shape[0], n_frames, 2))
    return start[:, None, :] + path[None] + jitter


# ------------------------------------------------------------------------------------- DMT, hand computed

# ref0 steps (1,0),(1,0)   ref1 steps (0,1),(1,1)
# gen0 steps (1,0),(1,0)   gen1 steps (0,1),(1,0)
# S[gen, ref] = [[1, (0 + 1/sqrt2)/2], [(0 + 1)/2, (1 + 1/sqrt2)/2]]
DMT_REF = tracks_from_steps([[10, 20], [30, 40]], [[[1, 0], [1, 0]], [[0, 1], [1, 1]]])
DMT_GEN = tracks_from_steps([[50, 5], [7, 9]], [[[1, 0], [1, 0]], [[0, 1], [1, 0]]])


def test_similarity_matrix_hand_computed():
    sim = displacement_similarity(DMT_REF, DMT_GEN)  # rows: reference tracks
    expected = np.array([[1.0, 0.5], [1 / (2 * R2), (1 + 1 / R2) / 2]])
    np.testing.assert_allclose(sim, expected, atol=1e-12)


def test_dmt_clean_hand_computed():
    res = motion_fidelity_dmt(DMT_REF, DMT_GEN, identity_quirk=False)
    # each generated track takes its best reference track: gen0 -> 1, gen1 -> (1 + 1/sqrt2)/2
    assert res.score == pytest.approx((1 + (1 + 1 / R2) / 2) / 2, abs=1e-9)
    np.testing.assert_allclose(res.per_track, [1.0, (1 + 1 / R2) / 2], atol=1e-12)


def test_dmt_identity_quirk_changes_the_score():
    res = motion_fidelity_dmt(DMT_REF, DMT_GEN)  # identity_quirk=True is the released behaviour
    # S - I = [[0, 1/(2 sqrt2)], [1/2, (1 + 1/sqrt2)/2 - 1]]: both diagonal winners lose their match
    expected = (1 / (2 * R2) + 0.5) / 2
    assert res.score == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(res.per_track, [1 / (2 * R2), 0.5], atol=1e-12)
    clean = motion_fidelity_dmt(DMT_REF, DMT_GEN, identity_quirk=False)
    assert clean.score - res.score > 0.4


def test_dmt_quirk_penalises_identical_videos():
    # two tracks with different motions, generated == reference: clean 1, quirk 0 (cross pairs are 0)
    ref = tracks_from_steps([[0, 0], [5, 5]], [[[1, 0], [1, 0]], [[0, 1], [0, 1]]])
    assert motion_fidelity_dmt(ref, ref, identity_quirk=False).score == pytest.approx(1.0, abs=1e-12)
    assert motion_fidelity_dmt(ref, ref).score == pytest.approx(0.0, abs=1e-12)


def test_dmt_direction_and_symmetric_hand_computed():
    ref = tracks_from_steps([[0, 0]], [[[1, 0], [1, 0]]])
    gen = tracks_from_steps([[3, 3], [9, 9]], [[[1, 0], [1, 0]], [[0, 1], [0, 1]]])
    kw = {"identity_quirk": False}
    # gen -> ref: mean(1, 0); ref -> gen: max(1, 0); symmetric: their average
    assert motion_fidelity_dmt(ref, gen, **kw).score == pytest.approx(0.5, abs=1e-12)
    assert motion_fidelity_dmt(ref, gen, direction="ref_to_gen", **kw).score == pytest.approx(1.0, abs=1e-12)
    assert motion_fidelity_dmt(ref, gen, symmetric=True, **kw).score == pytest.approx(0.75, abs=1e-12)
    with pytest.raises(ValueError, match="identity_quirk"):
        motion_fidelity_dmt(ref, gen)  # eye(N) needs index-aligned sets
    with pytest.raises(ValueError, match="direction"):
        motion_fidelity_dmt(ref, gen, direction="both", **kw)


# ------------------------------------------------------------------------------------- DeT, hand computed

SIZE = (100, 200)  # (H, W)
# normalised: ref0 starts (0.5, 0.5) and steps (0.1, 0) twice; ref1 starts (0.5, 0.5), steps (0, 0.1) twice
DET_REF = np.array([[[100, 50], [120, 50], [140, 50]], [[100, 50], [100, 60], [100, 70]]], dtype=float)
# gen0 starts (0, 0.5), steps (0.1, 0) then (0, 0.1); gen1 starts (0.5, 0.5), stays, then steps (0.1, 0)
DET_GEN = np.array([[[0, 50], [20, 50], [20, 60]], [[100, 50], [100, 50], [120, 50]]], dtype=float)


def test_det_hand_computed_with_initial_position():
    res = motion_fidelity_det(DET_REF, DET_GEN, size=SIZE)
    # terms (start, step1, step2); start cosines: gen0 (0,1) vs (1,1) -> 1/sqrt2, gen1 vs either -> 1
    # gen0: vs ref0 (1/sqrt2 + 1 + 0)/3, vs ref1 (1/sqrt2 + 0 + 1)/3
    # gen1 (static step1 -> 0 against moving): vs ref0 (1 + 0 + 1)/3, vs ref1 (1 + 0 + 0)/3
    expected_per_track = [(1 / R2 + 1) / 3, 2 / 3]
    np.testing.assert_allclose(res.per_track, expected_per_track, atol=1e-12)
    assert res.score == pytest.approx(np.mean(expected_per_track), abs=1e-9)
    assert res.trajectory_distance is None


def test_det_hand_computed_displacements_only():
    res = motion_fidelity_det(DET_REF, DET_GEN, size=SIZE, include_initial_position=False)
    # gen0: vs ref0 (1 + 0)/2, vs ref1 (0 + 1)/2; gen1: vs ref0 (0 + 1)/2, vs ref1 (0 + 0)/2
    np.testing.assert_allclose(res.per_track, [0.5, 0.5], atol=1e-12)
    assert res.score == pytest.approx(0.5, abs=1e-9)


def test_det_identical_sets_score_one():
    ref = smooth_set()
    res = motion_fidelity_det(ref, ref.copy(), size=(128, 160))
    assert res.score == pytest.approx(1.0, abs=1e-12)
    assert res.score <= 1.0


def test_det_time_reversed_and_perpendicular_score_low():
    ref = smooth_set()
    reversed_ = ref[:, ::-1].copy()
    assert motion_fidelity_det(ref, reversed_, size=(128, 160)).score < 0.5
    steps = np.diff(ref, axis=1)
    perpendicular = tracks_from_steps(ref[:, 0], np.stack([-steps[..., 1], steps[..., 0]], -1))
    res = motion_fidelity_det(ref, perpendicular, size=(128, 160))
    assert res.score < 0.5
    # square frame: the rotation survives normalisation; only the start-position term (1 of 8) agrees
    res_sq = motion_fidelity_det(ref, perpendicular, size=(160, 160))
    assert res_sq.score == pytest.approx(1 / 8, abs=0.05)


def test_det_normalisation_changes_anisotropic_motion():
    ref = tracks_from_steps([[50, 50]], [[[1, 1], [1, 1]]])
    gen = tracks_from_steps([[50, 50]], [[[1, -1], [1, -1]]])
    kw = {"include_initial_position": False}
    # pixels: perpendicular. W = 2H: (1/200, 1/100) . (1/200, -1/100) / (5 / 40000) = -3/5
    assert motion_fidelity_det(ref, gen, size=(100, 100), **kw).score == pytest.approx(0.0, abs=1e-12)
    assert motion_fidelity_det(ref, gen, size=(100, 200), **kw).score == pytest.approx(-0.6, abs=1e-9)
    assert motion_fidelity_dmt(ref, gen, identity_quirk=False).score == pytest.approx(0.0, abs=1e-12)


def test_det_resamples_the_longer_video():
    ref = DET_REF
    gen5 = np.array(
        [[[0, 50], [5, 50], [20, 50], [20, 55], [20, 60]], [[100, 50], [90, 50], [100, 50], [0, 0], [120, 50]]], float
    )
    # the release's int32(float32 linspace(0, 4, 3)) = frames 0, 2, 4 -> exactly DET_GEN (tests/test_det_parity.py)
    np.testing.assert_array_equal(gen5[:, [0, 2, 4]], DET_GEN)
    a = motion_fidelity_det(ref, gen5, size=SIZE)
    b = motion_fidelity_det(ref, DET_GEN, size=SIZE)
    assert a.score == pytest.approx(b.score, abs=1e-12)


def test_det_trajectory_distance_hand_computed():
    ref = np.array([[[0, 0], [10, 0]]], float)  # normalised (0,0) -> (1,0) in a 10 x 10 frame
    gen = np.array([[[0, 0], [0, 10]]], float)  # (0,0) -> (0,1)
    res = motion_fidelity_det(ref, gen, size=(10, 10), with_trajectory_distance=True)
    # mean over all 4 frame pairs: 0, 1, 1, sqrt2 -- every frame against every frame, not matched in time
    d = (2 + R2) / 4
    assert res.trajectory_distance == pytest.approx(d, abs=1e-12)
    assert res.trajectory_similarity == pytest.approx(1 / (1 + d), abs=1e-12)
    # ...which is why a trajectory is not at distance 0 from itself
    self_d = trajectory_distance_matrix(ref / 10, np.ones((1, 2), bool), ref / 10, np.ones((1, 2), bool))
    assert self_d[0, 0] == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------------------------------------------- static points


def test_static_points_never_nan_and_follow_the_convention():
    static = np.repeat(np.array([[[30.0, 40.0]], [[60.0, 10.0]]]), 4, axis=1)  # (2, 4, 2), never moves
    moving = tracks_from_steps([[30, 40], [60, 10]], np.ones((2, 3, 2)))
    at_origin = np.zeros((1, 4, 2))  # DeT start vector (0, 0) is a zero vector too
    results = [
        motion_fidelity_dmt(static, static, identity_quirk=False),  # static vs static: cosine 1
        motion_fidelity_dmt(static, static),  # quirk: 1 - 1 on the diagonal, cross pairs are 1 too
        motion_fidelity_dmt(static, moving),  # static vs moving: cosine 0
        motion_fidelity_det(static, static, size=(64, 64)),
        motion_fidelity_det(static, moving, size=(64, 64)),
        motion_fidelity_det(at_origin, at_origin, size=(64, 64)),
    ]
    expected = [1.0, 1.0, 0.0, 1.0, 1 / 4, 1.0]  # DeT static-vs-moving: only the start term (1 of 4) agrees
    for res, value in zip(results, expected, strict=True):
        assert not np.isnan(res.score) and not np.isnan(res.per_track).any()
        assert res.score == pytest.approx(value, abs=1e-12)
    sim = displacement_similarity(static, moving)
    assert not np.isnan(sim).any()


def test_single_static_track_with_quirk():
    static = np.zeros((1, 3, 2))
    assert motion_fidelity_dmt(static, static).score == pytest.approx(0.0, abs=1e-12)  # 1 - eye


# ------------------------------------------------------------------------------------------ visibility


def test_visibility_excludes_steps():
    ref = tracks_from_steps([[10, 10]], [[[1, 0], [-1, 0], [-1, 0], [1, 0]]])
    gen = tracks_from_steps([[10, 10]], [[[1, 0], [1, 0], [1, 0], [1, 0]]])
    kw = {"identity_quirk": False}
    assert motion_fidelity_dmt(ref, gen, **kw).score == pytest.approx(0.0, abs=1e-12)  # (1 - 1 - 1 + 1)/4
    vis = np.ones((1, 5), bool)
    vis[0, 2] = False  # frame 2 hidden: steps 1->2 and 2->3 are dropped, the two agreeing steps remain
    assert motion_fidelity_dmt(ref, gen, ref_visible=vis, **kw).score == pytest.approx(1.0, abs=1e-12)
    ref_nan = ref.copy()
    ref_nan[0, 2] = np.nan  # a non-finite position is treated as invisible
    assert motion_fidelity_dmt(ref_nan, gen, **kw).score == pytest.approx(1.0, abs=1e-12)
    assert motion_fidelity_det(ref_nan, gen, size=(50, 50)).score == pytest.approx(1.0, abs=1e-12)


def test_tracks_without_valid_steps_are_dropped():
    gen = tracks_from_steps([[0, 0]], [[[1, 0], [1, 0]]])
    ref = tracks_from_steps([[0, 0], [5, 5]], [[[1, 1], [1, -1]], [[1, 0], [1, 0]]])
    vis = np.ones((2, 3), bool)
    vis[1, 1:] = False  # ref1 (which matches gen perfectly) has a single visible frame: no step at all
    kw = {"identity_quirk": False}
    assert motion_fidelity_dmt(ref, gen, **kw).score == pytest.approx(1.0, abs=1e-12)
    masked = motion_fidelity_dmt(ref, gen, ref_visible=vis, **kw)
    assert masked.score == pytest.approx(1 / R2, abs=1e-12)  # only ref0 is left: (1/sqrt2 + 1/sqrt2)/2
    per_ref = motion_fidelity_dmt(ref, gen, ref_visible=vis, direction="ref_to_gen", **kw)
    assert per_ref.per_track.shape == (1,)
    sim = displacement_similarity(ref, gen, ref_visible=vis)
    assert np.isnan(sim[1]).all() and not np.isnan(sim[0]).any()  # undefined pairs are marked, not scored
    none_visible = np.zeros((2, 3), bool)
    with pytest.raises(ValueError, match="no pair"):
        motion_fidelity_dmt(ref, gen, ref_visible=none_visible, **kw)


# ------------------------------------------------------------------------------------------- constants


def test_constants_are_recorded():
    dmt = motion_fidelity_dmt(DMT_REF, DMT_GEN)
    assert dmt.definition == "dmt"
    assert dmt.constants["grid"] == 55 and dmt.constants["identity_quirk"] is True
    assert dmt.constants["symmetric"] is False and dmt.constants["direction"] == "gen_to_ref"
    assert dmt.constants["coordinates"] == "pixels" and dmt.constants["per_track_of"] == "gen"
    assert dmt.constants["static_static_cos"] == 1.0 and dmt.constants["static_moving_cos"] == 0.0
    det = motion_fidelity_det(DET_REF, DET_GEN, size=SIZE, with_trajectory_distance=True)
    assert det.definition == "det"
    assert det.constants["grid"] == 50 and det.constants["identity_quirk"] is False
    assert det.constants["size_hw"] == SIZE and det.constants["include_initial_position"] is True
    assert det.constants["ref_size_hw"] == SIZE and det.constants["gen_size_hw"] == SIZE
    assert det.constants["trajectory_seed"] == 0
    assert det.constants["trajectory_tracks"] == 50 and "zero_eps" in det.constants
    with pytest.raises(AttributeError):
        det.score = 0.0  # results are frozen
    with pytest.raises(ValueError):
        det.per_track[0] = 0.0  # and their arrays read-only
