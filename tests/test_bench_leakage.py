"""The leakage suite (benchmarks/suites/toy_leakage.yaml) and its scores in benchmark results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from follow_your_motion.bench.leakage_suite import KINDS, SHIPPED, leakage_suite, write_leakage_suite
from follow_your_motion.bench.manifest import Case, load_manifest, validate_manifest
from follow_your_motion.bench.result_metrics import colours_in, flat_ground_truth, ground_truth_scores
from follow_your_motion.toyworld import render as sw
from follow_your_motion.toyworld.leakage import frames_showing

SHIPPED_FILE = Path(__file__).parents[1] / "benchmarks" / "suites" / "toy_leakage.yaml"
SUITE = leakage_suite(**SHIPPED)


def test_shipped_leakage_suite_is_the_generator_output(tmp_path: Path) -> None:
    assert write_leakage_suite(tmp_path / "suite.yaml").read_bytes() == SHIPPED_FILE.read_bytes()
    assert load_manifest(SHIPPED_FILE) == SUITE
    assert leakage_suite(2, seed=1) == leakage_suite(2, seed=1) != leakage_suite(2, seed=2)


def test_cases_spread_over_the_kinds_with_held_out_motion_and_prompts_that_exclude_the_leak() -> None:
    assert [c.id for c in SUITE.cases] == [f"{kind}-{i}" for kind in KINDS for i in range(SHIPPED["n_per_kind"])]
    programs = set()
    for case in SUITE.cases:
        kind = case.id.rsplit("-", 1)[0]
        assert case.shapesworld is not None and case.tags == [f"leak:{kind}"]
        scene = case.shapesworld.scene(9, 32, 32)
        moving, *rest = scene.objects
        assert moving.program in sw.HELDOUT_PROGRAMS and scene.camera is None
        programs.add(moving.program)
        assert (scene.background == "textured") == (kind == "textured")
        assert scene.background.startswith("dim-") == (kind == "dim-background")
        assert (moving.stripes is not None) == (kind == "stripes")
        assert [o.program for o in rest] == (["static"] if kind == "distractor" else [])
        assert case.category == ("multi-object" if kind == "distractor" else "single-object")
        (target,) = case.targets
        assert set(target.split()) <= set(sw.VOCABULARY) and set(case.caption.split()) <= set(sw.VOCABULARY)
        drawn = {c for o in scene.objects for c in o.colours} | {scene.background.removeprefix("dim-")}
        assert len(colours_in(target)) == 1 and not set(colours_in(target)) & drawn, case.id
        assert target.split()[-1] in sw.SHAPES and target.split()[-1] != moving.shape
        assert case.caption == sw.caption(scene)
        frames = sw.render(scene).frames
        assert all(frames_showing(frames, c) == 9 for o in scene.objects for c in o.colours), case.id
    assert programs == set(sw.HELDOUT_PROGRAMS)


def test_a_bad_stripes_colour_or_background_in_a_suite_names_the_field() -> None:
    case = SUITE.cases[0].model_dump(mode="json")
    case["reference"]["shapesworld"]["objects"][0]["stripes"] = "pink"
    with pytest.raises(ValueError, match=r"cases\[0\]\.reference\.shapesworld\.objects\[0\]\.stripes: unknown colour"):
        validate_manifest({"cases": [case]}, "suite.yaml")
    case["reference"]["shapesworld"]["objects"][0]["stripes"] = None
    case["reference"]["shapesworld"]["background"] = "plaid"
    with pytest.raises(ValueError, match=r"shapesworld\.background: unknown background 'plaid'; valid: .*dim-red"):
        validate_manifest({"cases": [case]}, "suite.yaml")


def _clean_target(case: Case) -> np.ndarray:
    """A clean render of the case's target prompt: its colour and shape on black, the moving object's motion."""
    scene = case.shapesworld.scene(9, 32, 32)
    (colour,), shape = colours_in(case.targets[0]), case.targets[0].split()[-1]
    target = replace(scene.objects[0], colour=colour, shape=shape, stripes=None)
    return sw.render(sw.SceneSpec((target,))).frames


@pytest.mark.parametrize("case", SUITE.cases, ids=lambda c: c.id)
def test_every_case_scores_full_leakage_for_a_copy_and_none_for_a_clean_target(case: Case) -> None:
    scene = case.shapesworld.scene(9, 32, 32)
    reference = sw.render(scene).frames
    prompt = case.targets[0]
    copy = flat_ground_truth(ground_truth_scores(scene, reference, reference.copy(), prompt))
    clean = flat_ground_truth(ground_truth_scores(scene, reference, _clean_target(case), prompt))
    applies = scene.background != "black"
    assert (copy["background_leak"], clean["background_leak"]) == ((1.0, 0.0) if applies else (None, None))
    assert (copy["object_colour_leak"], clean["object_colour_leak"]) == (1.0, 0.0)
    assert clean["colour_leak"] is False and clean["target_found_frames"] == 9


def test_leakage_in_the_ground_truth_record_names_each_colour() -> None:
    case = SUITE.case("distractor-0")
    scene = case.shapesworld.scene(9, 32, 32)
    reference = sw.render(scene).frames
    gt = ground_truth_scores(scene, reference, reference, case.targets[0])
    moving, still = scene.objects
    assert gt["leakage"] == {"background": "black", "background_leak": None,
                             "object_colours": {moving.colour: 1.0, still.colour: 1.0}, "object_colour_leak": 1.0}
    assert [o["reference"] for o in gt["objects"]] == [moving.name]  # the distractor is paired with nothing
    assert flat_ground_truth(None)["background_leak"] is None and flat_ground_truth(None)["object_colour_leak"] is None
