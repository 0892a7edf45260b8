"""KLT grid tracker on synthetic motion with known ground truth, tracker lookup, optional CoTracker errors."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from follow_your_motion.bench.trackers import get_tracker, track_grid, track_grid_cotracker
from follow_your_motion.bench.trackers.cotracker import CHECKPOINT_ENV
from follow_your_motion.bench.trackers.klt import FB_THRESHOLD, grid_points
from follow_your_motion.errors import InputError


def texture(size: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random texture (Gaussian-blurred noise) stretched to 0..255, float32."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), sigma), None, 0, 255, cv2.NORM_MINMAX)


def to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_klt_recovers_subpixel_translation():
    size, (dx, dy), n_frames = 96, (1.3, -0.7), 6
    base = texture(size, seed=1)
    frames = np.stack(
        [
            to_rgb(
                cv2.warpAffine(
                    base,
                    np.float32([[1, 0, dx * k], [0, 1, dy * k]]),
                    (size, size),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT,
                )
            )
            for k in range(n_frames)
        ]
    )
    tracks = track_grid(frames, grid=20)
    assert tracks.points.shape == (400, n_frames, 2) and tracks.points.dtype == np.float32
    assert tracks.visible.shape == (400, n_frames) and tracks.tracker == "klt" and tracks.grid == 20
    assert tracks.constants["fb_threshold_px"] == FB_THRESHOLD
    # interior: far enough from the border that the reflected (mirror-moving) content is out of the window
    start = tracks.points[:, 0]
    interior = ((start >= 18) & (start <= size - 1 - 18)).all(axis=1)
    steps = np.diff(tracks.points, axis=1)
    ok = tracks.visible[:, 1:] & tracks.visible[:, :-1] & interior[:, None]
    assert ok.sum() >= 0.8 * interior.sum() * (n_frames - 1)
    err = np.linalg.norm(steps[ok] - np.array([dx, dy]), axis=1)
    assert np.median(err) < 0.5
    assert np.percentile(err, 90) < 0.5
    assert np.median(err) < 0.1  # genuinely sub-pixel, not whole-pixel steps that happen to be close


def test_klt_reversing_object_gives_reversed_displacements():
    size, obj = 96, 48
    background, patch = texture(size, seed=2), texture(obj, seed=3, sigma=1.5)
    xs = [16, 19, 22, 25, 22, 19, 16]  # +3 px per frame, then -3 px per frame
    y0 = 24
    frames = []
    for x in xs:
        frame = background.copy()
        frame[y0 : y0 + obj, x : x + obj] = patch
        frames.append(to_rgb(frame))
    tracks = track_grid(np.stack(frames), grid=24)
    start = tracks.points[:, 0]
    on_object = (
        (start[:, 0] >= xs[0] + 12)
        & (start[:, 0] <= xs[0] + obj - 13)
        & (start[:, 1] >= y0 + 12)
        & (start[:, 1] <= y0 + obj - 13)
    )
    assert on_object.sum() >= 20
    steps = np.diff(tracks.points[on_object], axis=1)
    ok = tracks.visible[on_object][:, 1:] & tracks.visible[on_object][:, :-1]
    for t, expected in enumerate([3, 3, 3, -3, -3, -3]):
        dx = np.median(steps[ok[:, t], t, 0])
        assert np.sign(dx) == np.sign(expected) and abs(dx - expected) < 0.5
        assert abs(np.median(steps[ok[:, t], t, 1])) < 0.5


def test_forward_backward_check_marks_lost_points():
    a, b = texture(64, seed=4), texture(64, seed=5)
    shift = np.float32([[1, 0, 1.0], [0, 1, 0.5]])
    a1 = cv2.warpAffine(a, shift, (64, 64), borderMode=cv2.BORDER_REFLECT)
    b1 = cv2.warpAffine(b, shift, (64, 64), borderMode=cv2.BORDER_REFLECT)
    # frame 2 is unrelated content (a cut): its matches are noise and must fail forward-backward
    tracks = track_grid(np.stack([to_rgb(f) for f in (a, a1, b, b1)]), grid=10)
    visible = tracks.visible.mean(axis=0)
    assert visible[1] > 0.8 and visible[2] < 0.3
    assert not (tracks.visible[:, 3] & ~tracks.visible[:, 2]).any()  # a lost point stays lost
    assert np.isnan(tracks.points[~tracks.visible]).all()


def test_small_frames_get_one_point_per_pixel():
    pts = grid_points(8, 12, grid=50, margin=1.0)
    xs, ys = np.unique(pts[:, 0]), np.unique(pts[:, 1])
    np.testing.assert_array_equal(xs, np.arange(1, 11))  # every whole pixel in [1, 10]
    np.testing.assert_array_equal(ys, np.arange(1, 7))
    tracks = track_grid(np.zeros((3, 8, 12, 3), np.uint8), grid=50)  # flat frames: LK has nothing to lock on
    assert tracks.points.shape[0] == len(np.unique(tracks.points[:, 0, 0])) * len(np.unique(tracks.points[:, 0, 1]))
    assert tracks.visible[:, 0].all()


def test_get_tracker_names():
    assert get_tracker("klt") is track_grid
    assert get_tracker("cotracker") is track_grid_cotracker
    with pytest.raises(ValueError, match="unknown tracker 'raft'.*cotracker, klt"):
        get_tracker("raft")


def test_cotracker_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cotracker", None)  # import cotracker -> ImportError
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    with pytest.raises(InputError, match="pip install.*co-tracker") as info:
        track_grid_cotracker(np.zeros((2, 8, 8, 3), np.uint8), checkpoint="/nonexistent.pth")
    assert CHECKPOINT_ENV in str(info.value)


def test_cotracker_missing_checkpoint_is_a_clear_error(monkeypatch, tmp_path):
    package, predictor = types.ModuleType("cotracker"), types.ModuleType("cotracker.predictor")

    class NeverBuilt:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the model must not be built without a checkpoint")

    predictor.CoTrackerPredictor = NeverBuilt
    monkeypatch.setitem(sys.modules, "cotracker", package)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", predictor)
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="never downloaded"):
        track_grid_cotracker(frames)
    with pytest.raises(InputError, match="not found"):
        track_grid_cotracker(frames, checkpoint=tmp_path / "scaled_offline.pth")
    monkeypatch.setenv(CHECKPOINT_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="not found"):
        track_grid_cotracker(frames)
