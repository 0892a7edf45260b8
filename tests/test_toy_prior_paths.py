"""The motion prior's pretraining paths (toyworld.paths) and how evaluation paths are kept out of them
(toyworld.exclusion)."""

from __future__ import annotations

import numpy as np
import pytest

from follow_your_motion.errors import InputError
from follow_your_motion.toyworld import exclusion, paths
from follow_your_motion.toyworld.pretrain import PretrainSettings, batch
from follow_your_motion.toyworld.render import (
    FREE_PROGRAM,
    HELDOUT_PROGRAMS,
    PRETRAIN_PROGRAMS,
    VOCABULARY,
    ObjectSpec,
    SceneSpec,
    caption,
    object_centres,
    render,
)
from follow_your_motion.toyworld.robustness import make_clip
from follow_your_motion.toyworld.scenes import random_scene

MOTION_WORDS = {"moves", "stays", "still", "left", "right", "up", "down", "camera", "pans", "zooms"}


def test_a_free_path_is_drawn_where_it_says_and_captioned_by_appearance() -> None:
    path = tuple((0.2 * np.cos(a), 0.1 * np.sin(a)) for a in np.linspace(0, 3, 9))
    scene = SceneSpec((ObjectSpec("circle", "red", FREE_PROGRAM, 0.25, path=path),))
    centres = object_centres(scene)[0]
    want = np.asarray(path) * 32
    np.testing.assert_allclose(centres - centres.mean(0), want - want.mean(0), atol=1e-9)
    clip = render(scene)
    assert clip.caption == "a red circle" == caption(scene, with_motion=True)
    assert np.abs(clip.tracks["red circle"].centroid - centres).max() < 0.5  # the drawn pixels follow it


@pytest.mark.parametrize(("program", "path", "message"), [
    (FREE_PROGRAM, None, "path missing"),
    ("left", ((0.0, 0.0),) * 9, "path given"),
    (FREE_PROGRAM, ((0.0, 0.0),) * 8, "one (dx, dy) per frame"),
])
def test_a_path_and_the_free_program_go_together(program: str, path: tuple | None, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(SceneSpec((ObjectSpec("circle", "red", program, path=path),)))


@pytest.mark.parametrize("kind", paths.TIMINGS)
def test_timings_run_from_start_to_end_without_going_back(kind: str) -> None:
    u = np.linspace(0, 1, 1001)
    progress = paths.timing(np.random.default_rng(3), kind, u)
    assert progress[0] == 0.0 and progress[-1] == pytest.approx(1.0)
    steps = np.diff(progress)
    assert (steps >= 0).all()
    if kind == "steady":
        np.testing.assert_allclose(progress, u, atol=1e-12)
    if kind == "stop-and-go":  # a pause of at least 10% of the clip
        still = np.flatnonzero(steps == 0)
        assert len(still) >= 99
    if kind == "speed-change":  # two speeds at least
        assert np.ptp(steps[steps > 0]) > 1e-4


@pytest.mark.parametrize("family", paths.FAMILIES)
def test_paths_are_centred_fit_the_frame_and_respect_the_step_bound(family: str) -> None:
    rng = np.random.default_rng(5)
    room = paths.room_for(0.3, 32, 32)
    for _ in range(40):
        path = paths.draw_path(rng, 9, room, family=family)
        assert path.shape == (9, 2)
        np.testing.assert_allclose((path.max(0) + path.min(0)) / 2, 0.0, atol=1e-12)
        assert (np.abs(path).max(0) <= np.asarray(room) + 1e-12).all()
        assert np.linalg.norm(np.diff(path, axis=0), axis=1).max() <= paths.MAX_STEP + 1e-12
        scene = SceneSpec((ObjectSpec("circle", "red", FREE_PROGRAM, 0.3, anchor=(0.0, 1.0),
                                      path=tuple(map(tuple, path))),))
        render(scene)  # fits the frame at an extreme anchor (render raises otherwise)


def test_distance_is_the_exact_minimum_and_the_cap_only_caps() -> None:
    rng = np.random.default_rng(11)
    bank = exclusion.evaluation_paths(9)
    for _ in range(5):
        path = paths.draw_path(rng, 9, paths.room_for(0.25, 32, 32))
        brute = np.linalg.norm(bank - exclusion.centred(path), axis=-1).max(axis=-1).min()
        assert exclusion.distance_to_evaluation(path) == pytest.approx(brute, abs=1e-15)
        assert exclusion.distance_to_evaluation(path, cap=0.05) == min(brute, 0.05)
    shifted = bank[7] + np.array([0.1, -0.2])  # a translated evaluation path is that path (centred distance)
    assert exclusion.distance_to_evaluation(shifted) == pytest.approx(0.0, abs=1e-12)


def test_the_grid_holds_every_evaluation_path_within_its_tolerance() -> None:
    rng = np.random.default_rng(2)
    for program in HELDOUT_PROGRAMS:
        if program == "grow-shrink":
            continue
        for _ in range(10):
            o = ObjectSpec("circle", "red", program, float(rng.uniform(0.2, 0.3)), tuple(rng.uniform(size=2)),
                           float(rng.uniform()))
            centres = object_centres(SceneSpec((o,)))[0] / 32
            for version in (centres, -centres[::-1]):  # as drawn; mirrored both ways and played backwards
                assert exclusion.distance_to_evaluation(version, cap=0.05) <= exclusion.GRID_TOLERANCE, program
    clip = make_clip(5)  # the robustness set's clips are in it as they are
    h, w = clip.frames.shape[1:3]
    track = np.stack([np.interp(np.linspace(0, 1, 9), np.linspace(0, 1, len(clip.track)), clip.track[:, k])
                      for k in range(2)], 1) / [w, h]
    assert exclusion.distance_to_evaluation(track) == pytest.approx(0.0, abs=1e-12)


def test_a_draw_near_an_evaluation_path_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    orbit = object_centres(SceneSpec((ObjectSpec("circle", "red", "orbit-cw", phase=0.3),)))[0] / 32
    far = paths.draw_path(np.random.default_rng(1), 9, (0.3, 0.3))
    assert exclusion.distance_to_evaluation(far) >= exclusion.EXCLUSION_DISTANCE
    near = orbit * 1.05  # 5% wider than the held-out orbit: within 0.05 of it
    assert exclusion.distance_to_evaluation(near) < exclusion.EXCLUSION_DISTANCE
    offered = iter([near, far])
    monkeypatch.setattr(paths, "draw_path", lambda *args, **kwargs: next(offered))
    assert paths.draw_prior_path(np.random.default_rng(0), 9, (0.3, 0.3)) is far


def test_no_pretraining_draw_comes_near_an_evaluation_path() -> None:
    """Every object path of the pretraining data, the programs, the camera moves and the free paths, lies at
    least EXCLUSION_DISTANCE from every evaluation path."""
    rng = np.random.default_rng(7)
    nearest = {}
    for i in range(160):
        category = ("single", "multi", "camera", "human")[i % 4]
        scene = random_scene(rng, category, PRETRAIN_PROGRAMS, anchor_spread=0.2, free_paths=0.5)
        for o, centres in zip(scene.objects, object_centres(scene), strict=True):
            key = scene.camera or o.program
            gap = exclusion.distance_to_evaluation(centres / 32, cap=exclusion.EXCLUSION_DISTANCE)
            nearest[key] = min(nearest.get(key, np.inf), gap)
    assert FREE_PROGRAM in nearest and "pan-up-left" in nearest and "right" in nearest
    assert min(nearest.values()) >= exclusion.EXCLUSION_DISTANCE, nearest


def test_free_paths_enter_batches_with_appearance_only_captions() -> None:
    meta = {"video": {"frames": 9, "height": 32, "width": 32}}
    plain = batch(4, 32, meta, PretrainSettings(caption_dropout=0.0, motion_caption_rate=1.0))
    rich = batch(4, 32, meta, PretrainSettings(caption_dropout=0.0, motion_caption_rate=1.0, free_paths=1.0))
    words = {w for c in rich[1] for w in c.split()}
    assert words <= set(VOCABULARY)
    moving = [c for c in rich[1] if not c.startswith("the camera") and MOTION_WORDS & set(c.split())]
    assert not moving, moving  # single/multi all follow free paths: no motion words left
    assert any("moves" in c for c in plain[1])
    assert not np.array_equal(plain[0].numpy(), rich[0].numpy())


def test_free_paths_zero_draws_the_same_scenes_as_before() -> None:
    """free_paths 0 takes no random draw, so earlier runs' batches stay bit for bit: these are the scenes the code
    drew before the option existed (commit 264d47d)."""
    rng = np.random.default_rng(9)
    drawn = [random_scene(rng, c, PRETRAIN_PROGRAMS, anchor_spread=0.2, free_paths=0.0)
             for c in ("single", "multi", "camera", "human")]
    assert [(o.shape, o.colour, o.program) for s in drawn for o in s.objects] == [
        ("triangle", "yellow", "down-left"), ("triangle", "blue", "up-right"), ("circle", "cyan", "up-right"),
        ("triangle", "purple", "static"), ("figure", "blue", "wave")]
    assert drawn[1].objects[1].size == 0.2830621436971257 and drawn[2].camera == "zoom-out"
    assert drawn[3].objects[0].anchor == (0.5825620103567836, 0.5416413828206345)
    assert rng.random() == 0.9232382080702205
