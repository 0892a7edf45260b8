"""DeT motion fidelity against DeT's released evaluation (github.com/Shi-qingyu/DeT, ``evaluation.py``) when the
two videos differ in frame count or frame size, and its sampled-ids trajectory ("frechet") term.

Hand-made tracks with hand-computed numbers, plus a short re-statement of the release's formulas (torch, float64)
to compare the whole pipeline with on random tracks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from follow_your_motion.bench import score as score_module
from follow_your_motion.bench.metrics import motion_fidelity_det
from follow_your_motion.bench.metrics.motion_det import det_frame_indices, det_trajectory_ids
from follow_your_motion.bench.trackers import Tracks

R2, R5 = math.sqrt(2.0), math.sqrt(5.0)
TORCH_FMA_KERNEL = torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def release_frame_ids(n_long: int, n_short: int) -> np.ndarray:
    """The release's frame choice, evaluated literally: float32 linspace on the CPU, cast to int32."""
    return torch.linspace(0, n_long - 1, n_short).to(torch.int32).numpy().astype(np.int64)


# ------------------------------------------------------------------------------------------- frame indices


def test_frame_indices_hand_computed():
    # 17 -> 15: exact values 16 i / 14; i = 7 is exactly 8, but float32 gives 7.9999995 and the release keeps 7
    expected = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16]
    np.testing.assert_array_equal(det_frame_indices(17, 15), expected)
    assert 8 in np.linspace(0, 16, 15).astype(np.int64)  # the old floor(float64 linspace) kept 8 instead
    # 61 -> 45: i = 11 and 22 are exactly 15 and 30; float32 keeps them, float64 linspace falls to 14 and 29
    idx = det_frame_indices(61, 45)
    assert (idx[11], idx[22]) == (15, 30)
    old = np.linspace(0, 60, 45).astype(np.int64)
    assert (old[11], old[22]) == (14, 29)
    # the other cases of the issue: 121 -> 77 keeps 59 (not 60) at i = 38, 129 -> 61 keeps 63 (not 64) at i = 30
    assert det_frame_indices(121, 77)[38] == 59 and det_frame_indices(129, 61)[30] == 63
    np.testing.assert_array_equal(det_frame_indices(5, 3), [0, 2, 4])
    np.testing.assert_array_equal(det_frame_indices(9, 9), np.arange(9))
    np.testing.assert_array_equal(det_frame_indices(9, 1), [0])
    with pytest.raises(ValueError):
        det_frame_indices(3, 5)


@pytest.mark.skipif(not TORCH_FMA_KERNEL, reason="torch runs its non-vectorised DEFAULT kernel here")
def test_frame_indices_equal_the_release_formula():
    for n_long in range(2, 131):
        for n_short in range(1, n_long + 1):
            ours, release = det_frame_indices(n_long, n_short), release_frame_ids(n_long, n_short)
            assert np.array_equal(ours, release), (n_long, n_short, ours, release)
    for n_long, n_short in [(17, 15), (61, 45), (121, 77), (129, 61), (481, 49), (1000, 333)]:
        np.testing.assert_array_equal(det_frame_indices(n_long, n_short), release_frame_ids(n_long, n_short))


def test_score_keeps_the_release_frames_17_to_15():
    # ref: 15 frames moving +2 px in x; gen: 17 frames moving +1 px in x with a 1 px spike in y at frame 8 only
    ref = np.stack([10.0 + 2 * np.arange(15), np.full(15, 50.0)], -1)[None]
    gen = np.stack([10.0 + np.arange(17), np.full(17, 50.0)], -1)[None]
    gen[0, 8, 1] = 51.0
    res = motion_fidelity_det(ref, gen, size=(100, 100))
    # the release skips frame 8: the kept frames all move straight +x, every entry has cosine 1
    assert res.score == pytest.approx(1.0, abs=1e-12)
    assert res.constants["frames"] == {"ref": 15, "gen": 17, "compared": 15}
    # keeping frame 8 instead of 7 (the old rule) sees steps (2, 1) and (1, -1): cosines 2/sqrt5 and 1/sqrt2
    old = motion_fidelity_det(ref, gen[:, np.linspace(0, 16, 15).astype(np.int64)], size=(100, 100))
    assert old.score == pytest.approx((13 + 2 / R5 + 1 / R2) / 15, abs=1e-12)
    assert res.score - old.score == pytest.approx(0.0265644, abs=1e-6)


# ------------------------------------------------------------------------------------- per-video frame size


def test_each_video_normalised_by_its_own_size():
    # ref in a 100 x 200 (H x W) frame moves (20, 10) px per step, gen in a 50 x 50 frame (5, 5) px:
    # both are (0.1, 0.1) in their own normalised units, and both start at (0.5, 0.5)
    ref = np.array([[[100.0, 50.0], [120.0, 60.0], [140.0, 70.0]]])
    gen = np.array([[[25.0, 25.0], [30.0, 30.0], [35.0, 35.0]]])
    res = motion_fidelity_det(ref, gen, ref_size=(100, 200), gen_size=(50, 50))
    assert res.score == pytest.approx(1.0, abs=1e-12)
    assert res.constants["ref_size_hw"] == (100, 200) and res.constants["gen_size_hw"] == (50, 50)
    assert res.constants["size_hw"] is None
    # one size for both (the reference's) turns gen's step into (5/200, 5/100): cosine 3/sqrt10 with (1, 1),
    # and its start (25/200, 25/100) into direction (1, 2) against (1, 1): the same cosine
    shared = motion_fidelity_det(ref, gen, size=(100, 200))
    assert shared.score == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    # `size` is the default for a side whose own size is not given
    mixed = motion_fidelity_det(ref, gen, size=(100, 200), gen_size=(50, 50))
    assert mixed.score == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="gen_size"):
        motion_fidelity_det(ref, gen, ref_size=(100, 200))


def _dot_video(shape_hw: tuple[int, int], start: tuple[int, int], step: tuple[int, int], n_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of a 3 x 3 white square whose centre moves from `start` by `step` (x, y) px a frame."""
    frames = np.zeros((n_frames, *shape_hw, 3), np.uint8)
    for t in range(n_frames):
        x, y = start[0] + t * step[0], start[1] + t * step[1]
        frames[t, y - 1 : y + 2, x - 1 : x + 2] = 255
    return frames


def test_score_pair_tracks_each_video_at_its_own_size_for_det(monkeypatch):
    seen = []

    def centroid_tracker(frames: np.ndarray, grid: int) -> Tracks:
        # one track: the brightness-weighted centroid of each frame, in that frame's own pixels
        seen.append((grid, frames.shape[1:3]))
        weight = frames[..., 0].astype(np.float64)
        ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
        total = weight.sum(axis=(1, 2))
        points = np.stack([(weight * xs).sum(axis=(1, 2)) / total, (weight * ys).sum(axis=(1, 2)) / total], -1)
        return Tracks(points=points[None], visible=np.ones((1, len(frames)), bool), grid=grid, tracker="centroid")

    monkeypatch.setattr(score_module, "get_tracker", lambda name: centroid_tracker)
    # reference 40 x 80 moving (4, 2) px per frame, output 40 x 40 moving (2, 2): the same motion, normalised,
    # and the same normalised start, but a different aspect ratio
    ref = _dot_video((40, 80), (40, 20), (4, 2), 5)
    out = _dot_video((40, 40), (20, 20), (2, 2), 5)
    result = score_module.score_pair(ref, out, tracker="centroid")
    det = result["motion_fidelity_det"]
    assert det["score"] == pytest.approx(1.0, abs=1e-12)
    assert det["constants"]["ref_size_hw"] == (40, 80) and det["constants"]["gen_size_hw"] == (40, 40)
    # DeT saw both at their own size; DMT (pixels) saw the output fitted to the reference size
    assert seen == [(50, (40, 80)), (50, (40, 40)), (55, (40, 80)), (55, (40, 80))]
    assert result["output_resized"] is True and "DMT only" in result["output_resize"]
    # what the resized output would have given DeT: scale 2, crop 20 rows -> step (4, 4) in the 40 x 80 frame,
    # (0.05, 0.1) normalised against the reference's (0.05, 0.05): cosine 3/sqrt10 on every step
    centre = np.array([[40.0, 20.0]])
    resized_track = (centre + np.arange(5)[:, None] * [4.0, 4.0])[None]
    ref_track = (centre + np.arange(5)[:, None] * [4.0, 2.0])[None]
    cropped = motion_fidelity_det(ref_track, resized_track, size=(40, 80))
    assert cropped.score == pytest.approx((1 + 4 * 3 / math.sqrt(10)) / 5, abs=1e-12)


# ------------------------------------------------------------------------------ trajectory ("frechet") term


def test_trajectory_ids_are_the_release_draw():
    ids = det_trajectory_ids(7, 50, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        release = torch.randint(0, 7, size=(50,)).numpy()
    np.testing.assert_array_equal(ids, release)
    assert ids.shape == (50,) and ids.min() >= 0 and ids.max() <= 6
    assert np.unique(ids).size < 50  # with replacement
    np.testing.assert_array_equal(det_trajectory_ids(7, 50, seed=3), ids)  # seeded: reproducible
    assert not np.array_equal(det_trajectory_ids(7, 50, seed=4), ids)


def test_trajectory_term_takes_the_same_ids_from_both_videos():
    # static points far apart; generated track i sits 0.01 (normalised) to the right of reference track i.
    # Because the drawn ids are the same on both sides, every drawn generated track finds its own reference
    # track: nearest distance 0.01 whatever ids are drawn. (Independent draws would mostly miss it.)
    starts = np.array([[10.0, 10.0], [60.0, 20.0], [30.0, 80.0], [90.0, 90.0]])
    ref = np.repeat(starts[:, None], 3, axis=1)
    gen = ref + [1.0, 0.0]
    for seed in range(5):
        res = motion_fidelity_det(ref, gen, size=(100, 100), with_trajectory_distance=True, trajectory_seed=seed)
        assert res.trajectory_distance == pytest.approx(0.01, abs=1e-12)
        assert res.trajectory_similarity == pytest.approx(1 / 1.01, abs=1e-12)
        assert res.constants["trajectory_seed"] == seed and res.constants["trajectory_tracks"] == 50
        assert "same ids" in res.constants["trajectory_track_choice"]
    with pytest.raises(ValueError, match="index-aligned"):
        motion_fidelity_det(ref[:3], gen, size=(100, 100), with_trajectory_distance=True)
    every = motion_fidelity_det(ref[:3], gen, size=(100, 100), with_trajectory_distance=True, trajectory_tracks=None)
    # all tracks: gen 3 has no reference partner left; its nearest is ref 2 at |(0.61, 0.1)|
    nearest = [0.01, 0.01, 0.01, math.hypot(0.61, 0.1)]
    assert every.trajectory_distance == pytest.approx(np.mean(nearest), abs=1e-12)
    assert every.constants["trajectory_seed"] is None


def release_scores(ref_px, ref_hw, gen_px, gen_hw, seed, k=50):
    """DeT's evaluation restated (float64): per-video normalisation, float32 frame ids, cosine with the start
    position, and the sampled-ids trajectory term. Returns (cosine score, trajectory term)."""

    def normalise(px, hw):
        return torch.tensor(px / np.array([hw[1], hw[0]], dtype=np.float64))

    def align(a, b):
        if a.shape[1] > b.shape[1]:
            a = a[:, torch.linspace(0, a.shape[1] - 1, b.shape[1]).to(torch.int32)]
        elif a.shape[1] < b.shape[1]:
            b = b[:, torch.linspace(0, b.shape[1] - 1, a.shape[1]).to(torch.int32)]
        return a, b

    gen, ref = align(normalise(gen_px, gen_hw), normalise(ref_px, ref_hw))

    def seq(x):
        q = torch.cat([x[:, :1], x[:, 1:] - x[:, :-1]], dim=1)
        return q / q.norm(dim=-1, keepdim=True)

    cos = torch.einsum("ntc,mtc->nmt", seq(gen), seq(ref)).mean(-1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ids = torch.randint(0, gen.shape[0], size=(k,))
    g, r = gen[ids], ref[ids]
    dist = (g[:, None, :, None] - r[None, :, None, :]).norm(dim=-1).mean(dim=(2, 3))  # every frame vs every frame
    return cos.max(dim=1)[0].mean().item(), (1 / (1 + dist)).max(dim=1)[0].mean().item()


@pytest.mark.skipif(not TORCH_FMA_KERNEL, reason="torch runs its non-vectorised DEFAULT kernel here")
@pytest.mark.parametrize(("t_ref", "t_gen"), [(15, 17), (45, 61), (16, 16), (29, 13)])
def test_whole_score_equals_the_release_formula(t_ref, t_gen):
    rng = np.random.default_rng(t_ref * 100 + t_gen)
    ref_hw, gen_hw = (48, 80), (64, 64)
    ref = rng.uniform(0, 1, (30, t_ref, 2)) * [ref_hw[1], ref_hw[0]]
    gen = rng.uniform(0, 1, (30, t_gen, 2)) * [gen_hw[1], gen_hw[0]]
    ours = motion_fidelity_det(
        ref, gen, ref_size=ref_hw, gen_size=gen_hw, with_trajectory_distance=True, trajectory_seed=11
    )
    cos_score, frechet = release_scores(ref, ref_hw, gen, gen_hw, seed=11)
    assert ours.score == pytest.approx(cos_score, abs=1e-12)
    assert ours.trajectory_similarity == pytest.approx(frechet, abs=1e-12)
