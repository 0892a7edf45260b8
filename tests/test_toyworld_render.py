"""Tests for the ShapesWorld renderer: exact ground truth, determinism, motion semantics, captions."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pytest

from follow_your_motion.toyworld.render import (
    CAMERA_PROGRAMS,
    CATEGORIES,
    COLOURS,
    FIGURE,
    HELDOUT_PROGRAMS,
    HUMAN_PROGRAMS,
    PRETRAIN_PROGRAMS,
    SHAPES,
    VOCABULARY,
    ObjectSpec,
    SceneSpec,
    caption,
    render,
    segment_colour,
    track_colour,
)
from follow_your_motion.toyworld.scenes import random_scene

OBJECT_PROGRAMS = PRETRAIN_PROGRAMS + HELDOUT_PROGRAMS
CAMERA_WORDS = {"the", "camera", "pans", "over", "zooms", "in", "on", "out", "from"}
MOTION_WORDS = {"moves", "stays", "still", "left", "right", "up", "down"} | CAMERA_WORDS


def _single(program: str, shape: str = "circle", colour: str = "red", **kw) -> SceneSpec:
    obj_kw = {k: kw.pop(k) for k in ("size", "anchor", "phase") if k in kw}
    return SceneSpec(objects=(ObjectSpec(shape, colour, program, **obj_kw),), **kw)


def _assert_gt_matches_segmentation(scene: SceneSpec) -> None:
    clip = render(scene)
    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (scene.num_frames, scene.height, scene.width, 3)
    for obj in scene.objects:
        gt = clip.tracks[obj.name].centroid
        seg = track_colour(clip.frames, obj.colour, min_pixels=1)
        np.testing.assert_array_equal(np.isnan(gt), np.isnan(seg))
        ok = ~np.isnan(gt)
        assert np.all(np.abs(gt[ok] - seg[ok]) <= 0.5), (scene, gt, seg)


def _shoelace(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


@pytest.mark.parametrize("background", ["black", "textured"])
@pytest.mark.parametrize("program", OBJECT_PROGRAMS)
def test_centroid_matches_segmentation_every_program(program: str, background: str) -> None:
    for shape, anchor in zip(SHAPES, [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)], strict=True):
        _assert_gt_matches_segmentation(
            _single(program, shape, "blue", anchor=anchor, phase=0.3, background=background, num_frames=13)
        )


@pytest.mark.parametrize("program", HUMAN_PROGRAMS)
def test_centroid_matches_segmentation_figure(program: str) -> None:
    for background in ("black", "textured"):
        _assert_gt_matches_segmentation(_single(program, FIGURE, "orange", size=0.6, background=background))


@pytest.mark.parametrize("camera", CAMERA_PROGRAMS)
def test_centroid_matches_segmentation_camera(camera: str) -> None:
    _assert_gt_matches_segmentation(_single("static", "square", "cyan", background="textured", camera=camera))


@pytest.mark.parametrize("category", CATEGORIES)
def test_centroid_matches_segmentation_random_scenes(category: str) -> None:
    rng = np.random.default_rng(123)
    for i in range(12):
        scene = random_scene(
            rng,
            category,
            programs=OBJECT_PROGRAMS + HUMAN_PROGRAMS,
            num_frames=(9, 13, 17)[i % 3],
            height=32 + 8 * (i % 2),
            width=32,
        )
        if i % 2 and scene.camera is None:
            scene = SceneSpec(scene.objects, scene.num_frames, scene.height, scene.width, "textured")
        _assert_gt_matches_segmentation(scene)


def test_occlusion_later_object_wins_and_gt_is_visible_pixels() -> None:
    a = ObjectSpec("square", "red", "static", size=0.4)
    b = ObjectSpec("circle", "green", "right", size=0.3, anchor=(0.0, 0.5))
    clip = render(SceneSpec((a, b)))
    centre = clip.frames[:, 15:17, 15:17]
    assert (centre == COLOURS["green"]).all(axis=-1).any()  # the later object is drawn on top
    red_pixels = segment_colour(clip.frames, "red").sum(axis=(1, 2))
    assert red_pixels.min() < red_pixels.max()  # occlusion really happens in this scene
    _assert_gt_matches_segmentation(SceneSpec((a, b)))


def test_fully_occluded_object_gets_nan() -> None:
    small = ObjectSpec("square", "red", "static", size=0.15)
    big = ObjectSpec("square", "white", "static", size=0.4)
    clip = render(SceneSpec((small, big)))
    assert np.isnan(clip.tracks["red square"].centroid).all()
    assert np.isnan(clip.tracks["red square"].bbox).all()
    assert not np.isnan(clip.tracks["white square"].centroid).any()


def test_determinism() -> None:
    scene = _single("spiral", "triangle", "purple", phase=0.7, background="textured")
    np.testing.assert_array_equal(render(scene).frames, render(scene).frames)
    for category in CATEGORIES:
        s1 = random_scene(np.random.default_rng(5), category)
        s2 = random_scene(np.random.default_rng(5), category)
        assert s1 == s2
        np.testing.assert_array_equal(render(s1).frames, render(s2).frames)
    scenes = {random_scene(np.random.default_rng(seed), "multi") for seed in range(10)}
    assert len(scenes) > 1
    f1, f2 = render(random_scene(np.random.default_rng(1))), render(random_scene(np.random.default_rng(2)))
    assert not np.array_equal(f1.frames, f2.frames)


def test_textured_background_is_dark_grey_and_moves_with_pan() -> None:
    clip = render(_single("static", size=0.2, background="textured", camera="pan-right"))
    bg = clip.frames[~segment_colour(clip.frames, "red")]
    assert bg.max() < 80 and bg.min() > 0
    assert (bg[:, 0] == bg[:, 1]).all() and (bg[:, 1] == bg[:, 2]).all()
    assert not np.array_equal(clip.frames[0], clip.frames[-1])
    black = render(_single("static", size=0.2)).frames
    assert black[~segment_colour(black, "red")].max() == 0


@pytest.mark.parametrize("program", PRETRAIN_PROGRAMS[1:])
def test_line_programs_move_in_named_direction(program: str) -> None:
    c = render(_single(program, num_frames=9)).tracks["red circle"].centroid
    dx, dy = c[-1] - c[0]
    want_x = (program.endswith("right")) - (program.endswith("left"))
    want_y = (program.startswith("down")) - (program.startswith("up"))
    for d, want in ((dx, want_x), (dy, want_y)):
        if want == 0:
            assert abs(d) < 0.5
        else:
            assert d * want > 0.3 * 32 * (0.7 if "-" in program else 1.0)
    assert np.hypot(dx, dy) <= 0.55 * 32


def test_right_static_camera_and_scale_semantics() -> None:
    c = render(_single("right")).tracks["red circle"].centroid
    assert c[-1, 0] - c[0, 0] > 0 and np.all(np.abs(c[:, 1] - c[0, 1]) < 0.5)
    static = render(_single("static", background="textured")).tracks["red circle"]
    assert np.all(static.centroid == static.centroid[0])
    pan = render(_single("static", background="textured", camera="pan-right")).tracks["red circle"].centroid
    assert pan[-1, 0] < pan[0, 0]  # camera pans right -> content moves left
    zoom = render(_single("static", background="textured", camera="zoom-in")).tracks["red circle"].bbox
    area = (zoom[:, 2] - zoom[:, 0]) * (zoom[:, 3] - zoom[:, 1])
    assert area[-1] > area[0]
    bbox = render(_single("grow-shrink", num_frames=9)).tracks["red circle"]
    area = (bbox.bbox[:, 2] - bbox.bbox[:, 0] + 1) * (bbox.bbox[:, 3] - bbox.bbox[:, 1] + 1)
    assert area[4] > area[0] and area[4] > area[-1]
    assert np.all(np.diff(area[:5]) >= 0) and np.all(np.diff(area[4:]) <= 0)
    assert np.all(np.abs(bbox.centroid - bbox.centroid[0]) < 0.5)


def test_orbit_directions_have_opposite_signed_area() -> None:
    for phase in (0.0, 0.4):
        cw = render(_single("orbit-cw", phase=phase, num_frames=17)).tracks["red circle"].centroid
        ccw = render(_single("orbit-ccw", phase=phase, num_frames=17)).tracks["red circle"].centroid
        a_cw, a_ccw = _shoelace(cw), _shoelace(ccw)
        assert a_cw * a_ccw < 0 and min(abs(a_cw), abs(a_ccw)) > 20
        assert a_cw > 0  # clockwise on screen (y down) has positive shoelace area in image coordinates


def test_bounce_reverses_direction() -> None:
    for anchor in (0.0, 0.3, 0.7, 1.0):
        c = render(_single("bounce", anchor=(anchor, anchor), num_frames=17)).tracks["red circle"].centroid
        vx = np.diff(c[:, 0])
        assert (vx > 0.5).any() and (vx < -0.5).any()


def test_zigzag_spiral_and_heldout_programs_are_distinct() -> None:
    zig = render(_single("zigzag", num_frames=17)).tracks["red circle"].centroid
    assert (np.diff(zig[:, 0]) > 0).all()
    vy = np.sign(np.diff(zig[:, 1]))
    assert np.count_nonzero(vy[1:] != vy[:-1]) >= 2  # y direction flips at least twice
    spi = render(_single("spiral", num_frames=17)).tracks["red circle"].centroid
    step = np.hypot(*np.diff(spi, axis=0).T)
    assert step[8:].mean() > 1.5 * step[:8].mean()  # radius (and so speed) grows outwards
    tracks = {p: render(_single(p, num_frames=9)).tracks["red circle"] for p in HELDOUT_PROGRAMS}
    for p, q in itertools.combinations(HELDOUT_PROGRAMS, 2):
        assert not (
            np.allclose(tracks[p].centroid, tracks[q].centroid) and np.allclose(tracks[p].bbox, tracks[q].bbox)
        ), (p, q)


def test_texture_is_fixed_across_processes() -> None:
    code = (
        "import hashlib; from follow_your_motion.toyworld.render import *; "
        "o = ObjectSpec('circle', 'red', 'static'); "
        "s = SceneSpec((o,), background='textured', camera='zoom-in'); "
        "print(hashlib.sha256(render(s).frames.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    scene = _single("static", background="textured", camera="zoom-in")
    assert out.strip() == hashlib.sha256(render(scene).frames.tobytes()).hexdigest()


def test_human_programs_move_the_figure() -> None:
    for program in HUMAN_PROGRAMS:
        clip = render(_single(program, FIGURE, "green", size=0.6))
        assert not np.array_equal(clip.frames[0], clip.frames[2])
    jump = render(_single("jump", FIGURE, "green", size=0.6, num_frames=9)).tracks["green figure"].centroid
    assert jump[2, 1] < jump[0, 1] - 2  # airborne at u = 0.25 (y points down)


def test_objects_stay_in_frame_for_random_placements() -> None:
    rng = np.random.default_rng(0)
    for i in range(150):
        h, w = (16, 20, 32, 48)[i % 4], (32, 16, 32, 24)[i % 4]
        if i % 5 == 0:
            scene = random_scene(rng, ("camera", "human")[i % 2], num_frames=9, height=h, width=w)
        else:
            prog = OBJECT_PROGRAMS[i % len(OBJECT_PROGRAMS)]
            obj = ObjectSpec(
                str(rng.choice(SHAPES)),
                "white",
                prog,
                size=float(rng.uniform(0.2, 0.3)),
                anchor=(float(rng.uniform()), float(rng.uniform())),
                phase=float(rng.uniform()),
            )
            scene = SceneSpec((obj,), num_frames=9, height=h, width=w)
        for track in render(scene).tracks.values():
            b = track.bbox
            assert not np.isnan(b).any()
            # the shape never touches the outermost pixel rows/cols unless it is allowed to reach them:
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= w - 1).all() and (b[:, 3] <= h - 1).all()
    # an object whose mask extends beyond its bbox would be cut; check the shape is complete at the border
    full = render(_single("static", "square", size=0.3, anchor=(0.0, 0.0))).tracks["red square"].bbox[0]
    mid = render(_single("static", "square", size=0.3)).tracks["red square"].bbox[0]
    np.testing.assert_array_equal(full[2:] - full[:2], mid[2:] - mid[:2])
    assert full[0] >= 0 and full[1] >= 0


def test_captions_use_vocabulary_and_appearance_has_no_motion() -> None:
    assert list(VOCABULARY) == sorted(set(VOCABULARY))
    assert all(w.islower() and w.isalpha() for w in VOCABULARY)
    assert caption(_single("left")) == "a red circle moves left"
    assert caption(_single("static", "square", "yellow")) == "a yellow square stays still"
    assert caption(_single("up-right")) == "a red circle moves up right"
    assert caption(_single("zigzag")) == "a red circle"  # held-out programs: appearance only
    assert caption(_single("static", camera="pan-right", background="textured")) == (
        "the camera pans right over a red circle"
    )
    two = SceneSpec((ObjectSpec("triangle", "green", "down"), ObjectSpec("circle", "white", "up")))
    assert caption(two, with_motion=False) == "a green triangle and a white circle"
    scenes = [_single(p, s, c) for p, s, c in itertools.product(OBJECT_PROGRAMS, SHAPES, COLOURS)]
    scenes += [_single(p, FIGURE, "red") for p in HUMAN_PROGRAMS]
    scenes += [_single("static", camera=cam) for cam in CAMERA_PROGRAMS]
    scenes += [random_scene(np.random.default_rng(s), c) for s in range(5) for c in CATEGORIES]
    used = set()
    for scene in scenes:
        words = caption(scene).split()
        assert set(words) <= set(VOCABULARY), caption(scene)
        assert not set(caption(scene, with_motion=False).split()) & MOTION_WORDS
        used |= set(words)
    assert used == set(VOCABULARY)  # no dead words


def test_track_colour_time_reversal_and_absent_colour() -> None:
    clip = render(_single("figure-eight", "triangle", "yellow", phase=0.2))
    fwd = track_colour(clip.frames, "yellow")
    rev = track_colour(clip.frames[::-1], "yellow")
    np.testing.assert_array_equal(rev, fwd[::-1])
    assert np.isnan(track_colour(clip.frames, "cyan")).all()
    frames = clip.frames.copy()
    frames[3][segment_colour(frames[3:4], "yellow")[0]] = 0
    partial = track_colour(frames, "yellow")
    assert np.isnan(partial[3]).all() and not np.isnan(np.delete(partial, 3, axis=0)).any()
    # tolerance: noisy pixels near the colour still count, min_pixels gates tiny detections
    noisy = 0.9 * clip.frames + np.random.default_rng(0).uniform(0.0, 20.0, clip.frames.shape)  # off by 5..25
    assert np.allclose(track_colour(noisy, "yellow"), fwd, atol=0.5)
    assert np.isnan(track_colour(noisy, "yellow", tol=5)).all()
    assert np.isnan(track_colour(clip.frames, "yellow", min_pixels=10_000)).all()


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: render(_single("left", colour="magenta")), "magenta"),
        (lambda: render(_single("left", shape="hexagon")), "hexagon"),
        (lambda: render(_single("moonwalk")), "moonwalk"),
        (lambda: render(_single("wave")), "wave"),
        (lambda: render(_single("left", FIGURE)), "left"),
        (lambda: render(_single("left", camera="dolly")), "dolly"),
        (lambda: render(_single("left", background="plaid")), "plaid"),
        (lambda: render(_single("left", height=8)), "8"),
        (lambda: render(_single("left", size=1.5)), "1.5"),
        (lambda: render(_single("right", size=0.9)), "red circle"),
        (lambda: random_scene(np.random.default_rng(0), "crowd"), "crowd"),
        (lambda: random_scene(np.random.default_rng(0), programs=("teleport",)), "teleport"),
        (lambda: segment_colour(np.zeros((2, 4, 4, 3)), "pink"), "pink"),
        (lambda: segment_colour(np.zeros((4, 4, 3)), "red"), "(4, 4, 3)"),
    ],
)
def test_validation_errors_name_the_bad_value(make, bad: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        make()
    assert bad in str(err.value)


def test_unknown_name_error_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        render(_single("left", colour="magenta"))
    assert all(name in str(err.value) for name in COLOURS)
    with pytest.raises(ValueError) as err:
        render(_single("moonwalk"))
    assert all(name in str(err.value) for name in OBJECT_PROGRAMS)


def test_anchor_spread_zero_centres_every_path_and_narrows_placements() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        scene = random_scene(rng, "single", PRETRAIN_PROGRAMS, anchor_spread=0.0)
        (obj,) = scene.objects
        assert obj.anchor == (0.5, 0.5)
        track = render(scene).tracks[f"{obj.colour} {obj.shape}"].centroid
        middle = (track.min(0) + track.max(0)) / 2  # the path's extent is centred in the 32x32 frame
        assert np.abs(middle - 15.5).max() <= 1.0
    anchors = np.array([o.anchor for _ in range(50)
                        for o in random_scene(rng, "multi", PRETRAIN_PROGRAMS, anchor_spread=0.2).objects])
    assert anchors.min() >= 0.4 and anchors.max() <= 0.6 and anchors.std() > 0.02
    with pytest.raises(ValueError, match="anchor_spread"):
        random_scene(rng, "single", anchor_spread=1.5)
