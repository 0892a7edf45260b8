"""Appearance that can leak: the renderer's dim backgrounds and striped objects, and the leakage metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from follow_your_motion.errors import InputError
from follow_your_motion.toyworld.leakage import (
    background_leak,
    background_palette,
    colour_leaks,
    leakable_colours,
    leakage_metrics,
)
from follow_your_motion.toyworld.metrics import transfer_metrics
from follow_your_motion.toyworld.render import (
    COLOURS,
    DIM_BACKGROUNDS,
    FIGURE,
    SHAPES,
    ObjectSpec,
    SceneSpec,
    dim_colour,
    render,
    segment_colour,
    track_colour,
)

LEAKY_BACKGROUNDS = ("textured", *DIM_BACKGROUNDS)


def _scene(*objects: ObjectSpec, background: str = "black", camera: str | None = None) -> SceneSpec:
    return SceneSpec(objects, background=background, camera=camera)


def test_dim_colour_halves_each_channel_rounding_up() -> None:
    assert dim_colour("red") == (128, 0, 0)
    assert dim_colour("purple") == (80, 0, 128)
    assert dim_colour("orange") == (128, 64, 0)
    assert dim_colour("white") == (128, 128, 128)


@pytest.mark.parametrize("background", DIM_BACKGROUNDS)
def test_dim_background_is_plain_and_never_taken_for_an_object_or_black(background: str) -> None:
    clip = render(_scene(ObjectSpec("circle", "red", "orbit-cw"), background=background))
    dim = np.array(dim_colour(background.removeprefix("dim-")))
    objects = segment_colour(clip.frames, "red")
    assert (clip.frames[~objects] == dim).all()
    for colour in COLOURS:  # at the segmentation tolerance no background pixel matches any object colour
        assert not segment_colour(clip.frames, colour)[~objects].any()
    assert np.abs(dim).max() > 40  # nor black


@pytest.mark.parametrize("shape", [*SHAPES, FIGURE])
@pytest.mark.parametrize(("background", "camera"), [("black", None), ("textured", "zoom-in"), ("dim-cyan", None)])
def test_striped_object_is_both_colours_and_its_track_is_their_union(shape: str, background: str,
                                                                     camera: str | None) -> None:
    program = "wave" if shape == FIGURE else "grow-shrink"
    obj = ObjectSpec(shape, "red", program, size=0.5 if shape == FIGURE else 0.25, stripes="blue")
    clip = render(_scene(obj, background=background, camera=camera))
    assert obj.colours == ("red", "blue") and obj.name == f"red {shape}"
    red, blue = segment_colour(clip.frames, "red"), segment_colour(clip.frames, "blue")
    assert (red.sum(axis=(1, 2)) >= 3).all() and (blue.sum(axis=(1, 2)) >= 3).all()  # both in every frame
    np.testing.assert_array_equal(track_colour(clip.frames, obj.colours, min_pixels=1), clip.tracks[obj.name].centroid)
    plain = render(_scene(replace(obj, stripes=None), background=background, camera=camera))
    np.testing.assert_array_equal(segment_colour(plain.frames, "red"), red | blue)  # stripes only recolour
    assert clip.caption == plain.caption


@pytest.mark.parametrize(
    ("scene", "bad"),
    [
        (_scene(ObjectSpec("circle", "red", "zigzag", stripes="pink")), "pink"),
        (_scene(ObjectSpec("circle", "red", "zigzag", stripes="red")), "own colour 'red'"),
        (_scene(ObjectSpec("circle", "red", "zigzag"), background="dim-magenta"), "dim-magenta"),
    ],
)
def test_bad_appearance_options_name_the_problem(scene: SceneSpec, bad: str) -> None:
    with pytest.raises(InputError) as err:
        render(scene)
    assert bad in str(err.value)
    if "magenta" in bad:
        assert all(name in str(err.value) for name in LEAKY_BACKGROUNDS)


def _copy_and_clean(reference: SceneSpec, target: ObjectSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of the reference, and of a clean render of the target: its object on black, the same motion."""
    clean = _scene(replace(reference.objects[0], shape=target.shape, colour=target.colour, stripes=None),
                   camera=reference.camera)
    ref = render(reference).frames
    return ref, ref.copy(), render(clean).frames


@pytest.mark.parametrize("background", LEAKY_BACKGROUNDS)
@pytest.mark.parametrize("camera", [None, "pan-right"])
def test_background_leak_is_one_for_a_copy_and_zero_for_a_clean_target(background: str, camera: str | None) -> None:
    reference = _scene(ObjectSpec("triangle", "green", "static" if camera else "spiral", size=0.2),
                       background=background, camera=camera)
    ref, copy, clean = _copy_and_clean(reference, ObjectSpec("square", "white", "spiral"))
    assert background_leak(ref, copy) == 1.0
    assert background_leak(ref, clean) == 0.0
    scores = leakage_metrics(reference, ref, clean, ["white"])
    assert (scores["background"], scores["background_leak"]) == (background, 0.0)


@pytest.mark.parametrize("background", ["textured", "dim-orange"])
def test_background_leak_of_a_half_copy_is_the_copied_frames_share(background: str) -> None:
    """Frames 0-2 copied, 3-8 clean; the object keeps its shape and place, so every frame has as many background
    pixels."""
    reference = _scene(ObjectSpec("circle", "red", "static"), background=background)
    ref, _, clean = _copy_and_clean(reference, ObjectSpec("circle", "blue", "static"))
    half = np.concatenate([ref[:3], clean[3:]])
    assert background_leak(ref, half) == 3 / 9
    assert leakage_metrics(reference, ref, half, ["blue"])["object_colour_leak"] == 3 / 9


def test_background_pixel_leaks_within_tolerance_and_only_if_nearer_than_black() -> None:
    def leaks(background: str, value: tuple[int, int, int]) -> float:
        result = np.zeros((1, 16, 16, 3), np.uint8)
        result[0, :8] = value  # half the pixels have the value, half stay black
        return background_leak(render(_scene(ObjectSpec("circle", "red", "static"), background=background)).frames,
                               result)

    greys = background_palette(render(_scene(ObjectSpec("circle", "red", "static"), background="textured")).frames)
    assert (greys[:, 0] == greys[:, 1]).all() and (greys[:, 1] == greys[:, 2]).all()
    lo, hi = int(greys.min()), int(greys.max())
    assert 20 <= lo < hi <= 64 and lo % 2 == 0
    # a grey below the darkest texture grey leaks only when nearer to it than to black
    assert (leaks("textured", (lo // 2,) * 3), leaks("textured", (lo // 2 + 1,) * 3)) == (0.0, 0.5)
    assert (leaks("textured", (hi + 40,) * 3), leaks("textured", (hi + 41,) * 3)) == (0.5, 0.0)
    assert leaks("textured", (lo + 1, lo, lo)) == 0.5  # the tolerance is per channel: a tinted grey leaks
    # dim red is (128, 0, 0): within 40 on every channel leaks, 41 off does not
    assert (leaks("dim-red", (88, 40, 0)), leaks("dim-red", (87, 0, 0)), leaks("dim-red", (128, 41, 0))) == (
        0.5, 0.0, 0.0)
    assert leaks("dim-red", (128, 0, 0)) == 0.5


def test_the_ring_around_an_object_is_not_background() -> None:
    reference = render(_scene(ObjectSpec("circle", "red", "static"), background="textured")).frames
    result = np.zeros((1, 16, 16, 3), np.uint8)
    result[0, 5:11, 5:11] = 40  # a grey ring one pixel wide around a 4 x 4 blue block: a soft object edge
    result[0, 6:10, 6:10] = COLOURS["blue"]
    assert background_leak(reference, result) == 0.0
    result[0, 0] = 40  # one row of grey away from the object: 16 of the 256 - 36 background pixels
    assert background_leak(reference, result) == 16 / 220


def test_background_leak_needs_a_background_to_leak() -> None:
    reference = _scene(ObjectSpec("circle", "red", "zigzag"))
    frames = render(reference).frames
    with pytest.raises(InputError, match="background is black"):
        background_leak(frames, frames)
    assert leakage_metrics(reference, frames, frames, ["blue"])["background_leak"] is None
    textured = render(_scene(ObjectSpec("circle", "red", "zigzag"), background="textured")).frames
    full = np.broadcast_to(np.array(COLOURS["blue"], np.uint8), textured.shape)
    assert np.isnan(background_leak(textured, full))  # a result without background pixels


def _striped_with_distractor() -> SceneSpec:
    return _scene(ObjectSpec("circle", "red", "zigzag", size=0.25, anchor=(0.5, 0.0), stripes="blue"),
                  ObjectSpec("square", "yellow", "static", size=0.2, anchor=(0.5, 1.0)))


def test_leakable_colours_are_every_drawn_colour_the_prompt_leaves_out() -> None:
    scene = _striped_with_distractor()
    assert leakable_colours(scene, ["green"]) == ("red", "blue", "yellow")
    assert leakable_colours(scene, ["blue", "green"]) == ("red", "yellow")
    assert leakable_colours(scene, ["red", "blue", "yellow"]) == ()


def test_object_colour_leak_is_one_for_a_copy_zero_for_a_clean_target_and_averages_colours() -> None:
    reference = _striped_with_distractor()
    ref = render(reference).frames
    assert leakage_metrics(reference, ref, ref, ["green"])["object_colour_leak"] == 1.0
    target = replace(reference.objects[0], colour="green", shape="square", stripes=None)
    clean = render(_scene(target)).frames
    scores = leakage_metrics(reference, ref, clean, ["green"])
    assert scores["object_colours"] == {"red": 0.0, "blue": 0.0, "yellow": 0.0}
    assert scores["object_colour_leak"] == 0.0
    with_distractor = render(_scene(target, reference.objects[1])).frames  # only the distractor leaks
    scores = leakage_metrics(reference, ref, with_distractor, ["green"])
    assert scores["object_colours"] == {"red": 0.0, "blue": 0.0, "yellow": 1.0}
    assert scores["object_colour_leak"] == 1 / 3
    assert leakage_metrics(reference, ref, ref, ["red", "blue", "yellow"])["object_colour_leak"] is None


def test_colour_leak_counts_frames_per_reference_frame_and_skips_colours_never_shown() -> None:
    ref = render(_scene(ObjectSpec("circle", "red", "zigzag"))).frames
    occluded = ref.copy()
    occluded[4:] = 0  # the reference shows red in frames 0-3 only
    assert colour_leaks(occluded, ref, ("red", "green")) == {"red": 1.0}  # 9 frames of red for 4: capped at 1
    assert colour_leaks(occluded, ref[:2], ("red",)) == {"red": 2 / 4}


def test_transfer_metrics_track_a_striped_reference_by_both_colours() -> None:
    reference = _scene(ObjectSpec("circle", "red", "orbit-cw", stripes="blue"))
    ref = render(reference).frames
    clean = render(_scene(ObjectSpec("circle", "green", "orbit-cw"))).frames  # same pixels, one colour
    scores = transfer_metrics(ref, ("red", "blue"), clean, "green")
    assert scores["centred_error"] == 0.0 and scores["reference_colour_leaked"] is False
    stripes_only = ref.copy()
    stripes_only[segment_colour(ref, "red")] = COLOURS["green"]
    assert transfer_metrics(ref, ("red", "blue"), stripes_only, "green")["reference_colour_leaked"] is True
