"""ShapesWorld ground truth in benchmark results: the target shape check and its flat summary."""

from __future__ import annotations

import pytest

from follow_your_motion.bench.result_metrics import flat_ground_truth, ground_truth_scores, shapes_after_colours
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render


def _scene(*objects: tuple[str, str, str]) -> SceneSpec:
    return SceneSpec(tuple(ObjectSpec(shape, colour, program) for shape, colour, program in objects))


def test_shapes_after_colours_pairs_each_colour_with_the_shape_named_after_it() -> None:
    assert shapes_after_colours("a blue square and a green circle") == ["square", "circle"]
    assert shapes_after_colours("a blue figure") == [None]  # the fill ratio cannot judge a stick figure
    assert shapes_after_colours("the camera pans left over a red triangle") == ["triangle"]


@pytest.mark.parametrize(("drawn", "named", "ok"), [("square", "square", True), ("circle", "circle", True),
                                                     ("triangle", "triangle", True), ("square", "circle", False),
                                                     ("circle", "triangle", False)])
def test_target_shape_ok_compares_the_drawn_shape_with_the_prompt(drawn: str, named: str, ok: bool) -> None:
    reference = _scene(("circle", "red", "orbit-cw"))
    result = render(_scene((drawn, "blue", "orbit-cw"))).frames
    gt = ground_truth_scores(reference, render(reference).frames, result, f"a blue {named}")
    obj = gt["objects"][0]
    assert (obj["target_shape"], obj["drawn_shape"], obj["target_shape_ok"]) == (named, drawn, ok)
    assert flat_ground_truth(gt)["target_shape_ok"] is ok


def test_unjudgeable_or_missing_shapes_give_none_and_one_wrong_object_fails_the_result() -> None:
    reference = _scene(("circle", "red", "zigzag"), ("square", "green", "bounce"))
    frames = render(reference).frames
    both = render(_scene(("square", "blue", "zigzag"), ("circle", "yellow", "bounce"))).frames
    gt = ground_truth_scores(reference, frames, both, "a blue square and a yellow triangle")
    assert [o["target_shape_ok"] for o in gt["objects"]] == [True, False]
    assert flat_ground_truth(gt)["target_shape_ok"] is False
    human = _scene(("figure", "white", "wave"))
    gt = ground_truth_scores(human, render(human).frames, render(_scene(("figure", "cyan", "wave"))).frames,
                             "a cyan figure")
    assert gt["objects"][0]["target_shape_ok"] is None and flat_ground_truth(gt)["target_shape_ok"] is None
