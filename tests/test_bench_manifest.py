"""Benchmark manifests (validation, other layouts, the ShapesWorld suite) and the method registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from follow_your_motion.bench.manifest import Manifest, load_manifest
from follow_your_motion.bench.manifest_sources import from_folder, from_mtbench, resolve_manifest
from follow_your_motion.bench.methods import METHODS, get_method, get_methods
from follow_your_motion.bench.shapesworld_suite import SHAPESWORLD_SUITE, shapesworld_suite
from follow_your_motion.recipes import RECIPES
from follow_your_motion.run_settings import flatten
from follow_your_motion.toyworld import render as sw
from follow_your_motion.video import write_video

GENERATOR = {"shapesworld": {"objects": [{"shape": "circle", "colour": "red", "program": "orbit-cw"}]}}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A tiny real video file."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", np.zeros((5, 16, 16, 3), np.uint8), 8.0)


def good_cases(video: str) -> list[dict]:
    return [
        {"id": "walk", "category": "human", "reference": video, "caption": "a person walks",
         "targets": ["a robot walks", "a dog walks"]},
        {"id": "orbit", "category": "single-object", "reference": GENERATOR, "caption": "a red circle",
         "targets": ["a blue square"]},
    ]


def write_manifest(folder: Path, cases: list[dict], name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"name": "t", "cases": cases}))
    return path


def test_good_manifest_loads_with_absolute_paths(tmp_path, clip):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(clip.read_bytes())
    manifest = load_manifest(write_manifest(tmp_path, good_cases("videos/clip.mp4")))
    walk, orbit = manifest.cases
    assert walk.video == (tmp_path / "videos" / "clip.mp4").resolve() and walk.shapesworld is None
    assert walk.targets == ["a robot walks", "a dog walks"]
    assert orbit.video is None and orbit.shapesworld.objects[0].program == "orbit-cw"
    scene = orbit.shapesworld.scene(9, 32, 48)  # open sizes follow the run
    assert (scene.num_frames, scene.height, scene.width) == (9, 32, 48)
    assert manifest.case("orbit") is orbit


BAD = {
    "duplicate id": (lambda c: [c[0], {**c[1], "id": "walk"}], r"cases\[1\]\.id: duplicate id 'walk'"),
    "unknown category": (lambda c: [{**c[0], "category": "sports"}], r"cases\[0\]\.category: .*'camera'"),
    "missing reference file": (lambda c: [{**c[0], "reference": "nope.mp4"}],
                               r"cases\[0\]\.reference: file not found: .*nope\.mp4"),
    "unknown colour": (
        lambda c: [{**c[1], "reference": {"shapesworld": {"objects": [{"shape": "circle", "colour": "teal",
                                                                        "program": "orbit-cw"}]}}}],
        r"cases\[0\]\.reference\.shapesworld\.objects\[0\]\.colour: unknown colour 'teal'",
    ),
    "figure cannot orbit": (
        lambda c: [{**c[1], "reference": {"shapesworld": {"objects": [{"shape": "figure", "colour": "red",
                                                                        "program": "orbit-cw"}]}}}],
        r"cases\[0\]\.reference\.shapesworld: unknown program for figure 'orbit-cw'",
    ),
    "unknown generator": (lambda c: [{**c[1], "reference": {"blender": {}}}],
                          r"cases\[0\]\.reference\.shapesworld: Field required"),
    "no targets": (lambda c: [{**c[0], "targets": []}], r"cases\[0\]\.targets: List should have at least 1"),
    "empty target": (lambda c: [{**c[0], "targets": ["a cat", "  "]}], r"cases\[0\]\.targets\[1\]: String should"),
    "empty caption": (lambda c: [{**c[0], "caption": ""}], r"cases\[0\]\.caption: String should"),
    "bad id": (lambda c: [{**c[0], "id": "a__b"}], r"cases\[0\]\.id: 'a__b' is not a valid id"),
    "no cases": (lambda c: [], r"cases: List should have at least 1"),
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_manifest_names_file_and_field(tmp_path, clip, problem):
    edit, message = BAD[problem]
    path = write_manifest(tmp_path, edit(good_cases(str(clip))), name=f"{problem.replace(' ', '-')}.yaml")
    with pytest.raises(ValueError, match=message) as err:
        load_manifest(path)
    assert str(err.value).startswith(f"{path}: ")


def test_unreadable_manifest(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.yaml: cannot read manifest"):
        load_manifest(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("cases: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid YAML"):
        load_manifest(tmp_path / "broken.yaml")


def test_from_folder(tmp_path, clip):
    for name in ("dog run.mp4", "cat.mp4"):
        (tmp_path / name).write_bytes(clip.read_bytes())
    (tmp_path / "prompts.txt").write_text(
        "# video\tcaption\ttargets\n"
        "dog run.mp4\ta dog runs\ta cat runs|a robot runs\n"
        "\n"
        "cat.mp4\ta cat jumps\ta tiger jumps\tcamera\n"
    )
    manifest = from_folder(tmp_path)
    assert [(c.id, c.category, c.caption, c.targets) for c in manifest.cases] == [
        ("dog-run", "other", "a dog runs", ["a cat runs", "a robot runs"]),
        ("cat", "camera", "a cat jumps", ["a tiger jumps"]),
    ]
    assert manifest.cases[0].video == (tmp_path / "dog run.mp4").resolve()
    assert resolve_manifest(tmp_path) == manifest

    (tmp_path / "prompts.txt").write_text("cat.mp4\ta cat jumps\ta tiger jumps\nnope.mp4\ta\tb\n")
    with pytest.raises(ValueError, match=r"prompts\.txt:2: reference: file not found"):
        from_folder(tmp_path)
    (tmp_path / "prompts.txt").write_text("cat.mp4 a cat jumps a tiger jumps\n")
    with pytest.raises(ValueError, match=r"prompts\.txt:1: expected .*TAB-separated"):
        from_folder(tmp_path)


def _mtbench_case(root: Path, name: str, clip: Path, targets: str, caption: str = "a woman dances") -> None:
    (root / name / "videos").mkdir(parents=True)
    (root / name / "videos" / f"{name}.mp4").write_bytes(clip.read_bytes())
    (root / name / "prompts.txt").write_text(caption + "\n")
    (root / name / "eval_prompts.txt").write_text(targets)
    (root / name / "masks" / name).mkdir(parents=True)  # present in MTBench, ignored


def test_from_mtbench(tmp_path, clip):
    root = tmp_path / "MTBench"
    _mtbench_case(root, "dance-twirl", clip, "A robot is dancing on the stage.  \n\nA chef is dancing.\n")
    _mtbench_case(root / "hard", "snowboard", clip, "A panda snowboards.\n", caption="a man snowboards")
    manifest = from_mtbench(root)
    assert [(c.id, c.category, c.caption, c.targets, c.tags) for c in manifest.cases] == [
        ("dance-twirl", "other", "a woman dances", ["A robot is dancing on the stage.", "A chef is dancing."], []),
        ("snowboard", "other", "a man snowboards", ["A panda snowboards."], ["group:hard"]),
    ]
    assert manifest.cases[1].video == (root / "hard" / "snowboard" / "videos" / "snowboard.mp4").resolve()
    assert resolve_manifest(root) == manifest

    (root / "dance-twirl" / "eval_prompts.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"dance-twirl/eval_prompts\.txt: targets: List should have at least 1"):
        from_mtbench(root)
    with pytest.raises(ValueError, match="no MTBench case folders"):
        from_mtbench(tmp_path / "MTBench" / "dance-twirl" / "masks")


def test_shapesworld_suite_covers_categories_with_held_out_motion():
    suite = shapesworld_suite(n_per_category=3, seed=7, n_targets=2)
    assert sorted({c.category for c in suite.cases}) == ["camera", "human", "multi-object", "single-object"]
    assert len(suite.cases) == 12
    for case in suite.cases:
        spec = case.shapesworld
        assert spec is not None
        for obj in spec.objects:
            if obj.shape == sw.FIGURE:
                assert case.category == "human" and obj.program in sw.HUMAN_PROGRAMS  # a figure's only motions
            else:
                assert obj.program in sw.HELDOUT_PROGRAMS, (case.id, obj.program)
        assert (spec.camera is not None) == (case.category == "camera")
        assert len(spec.objects) == (2 if case.category == "multi-object" else 1)
        reference_colours = {o.colour for o in spec.objects}
        assert len(case.targets) == 2 and len(set(case.targets)) == 2
        for target in case.targets:
            words = target.split()
            colours = [w for w in words if w in sw.COLOURS]
            shapes = [w for w in words if w in (*sw.SHAPES, sw.FIGURE)]
            assert len(colours) == len(spec.objects) and not set(colours) & reference_colours, (case.id, target)
            for obj, shape in zip(spec.objects, shapes, strict=True):
                assert (shape == obj.shape) == (obj.shape == sw.FIGURE), (case.id, target)
        clip = sw.render(spec.scene(9, 32, 32))  # renders, and every object is visible
        assert all(not np.isnan(track.centroid).all() for track in clip.tracks.values())
    assert shapesworld_suite(n_per_category=3, seed=7, n_targets=2) == suite
    assert shapesworld_suite(n_per_category=3, seed=8, n_targets=2) != suite


def test_shipped_suite_is_the_generator_output():
    shipped = load_manifest(SHAPESWORLD_SUITE)
    assert shipped == shapesworld_suite(n_per_category=2, seed=0)
    assert resolve_manifest("shapesworld") == shipped
    assert isinstance(shipped, Manifest) and len(shipped.cases) == 8


# --------------------------------------------------------------------------------------------- methods

DIFFS = {
    "fym": {},
    "fym-no-heads": {"heads.select": "all"},
    "fym-no-rope": {"motion.rope": "none"},
    "fym-dense": {"motion.keep_frames": None},
    "fym-spatial-on": {"generate.spatial_scale": 1.0},
    "two-stage-lora": {"heads.select": "all", "motion.keep_frames": None},
    "full-lora": {"spatial.steps": 0, "heads.select": "all", "motion.keep_frames": None, "motion.motion_weight": 0.0},
    "base": {"generate.motion_scale": 0.0},
    "ditflow": {"generate.motion_scale": 0.0, "guidance.method": "ditflow"},
    "ditflow-positions": {"generate.motion_scale": 0.0, "guidance.method": "ditflow",
                          "guidance.ditflow.optimise": "positions"},
    "flow-guidance": {"generate.motion_scale": 0.0, "guidance.method": "flow"},
    "fym+ditflow": {"guidance.method": "ditflow"},  # and the latent mode pinned (`test_ditflow_methods_pin_their_mode`)
    "fym+flow-guidance": {"guidance.method": "flow"},
}
UNTUNED_METHODS = {"base", "ditflow", "ditflow-positions", "flow-guidance"}


@pytest.mark.parametrize("family", ["toy", "wan"])
def test_methods_differ_from_fym_exactly_as_documented(family):
    assert set(METHODS) == set(DIFFS)
    settings = RECIPES[family]
    fym = flatten(get_method("fym").config(settings).model_dump())
    for name, expected in DIFFS.items():
        mine = flatten(get_method(name).config(settings).model_dump())
        assert {k: v for k, v in mine.items() if fym[k] != v} == expected, name
    assert [m.name for m in get_methods("fym,base, fym")] == ["fym", "base"]
    assert {n for n, m in METHODS.items() if not m.tune} == UNTUNED_METHODS


def test_method_overrides_win_over_user_settings():
    user = {"heads": {"select": "classified"}, "generate": {"spatial_scale": 0.5, "steps": 7}}
    cfg = get_method("two-stage-lora").config(user)
    assert (cfg.heads.select, cfg.generate.spatial_scale, cfg.generate.steps) == ("all", 0.0, 7)


@pytest.mark.parametrize("name, mode", [("ditflow", "latent"), ("fym+ditflow", "latent"),
                                        ("ditflow-positions", "positions")])
def test_ditflow_methods_pin_their_mode(name, mode):
    """A user's DiTFlow mode or positions file does not leak into a benchmark's DiTFlow methods."""
    user = {"guidance": {"ditflow": {"optimise": "positions", "positions_from": "/elsewhere.safetensors"}}}
    ditflow = get_method(name).config(user).guidance.ditflow
    assert (ditflow.optimise, ditflow.positions_from) == (mode, None)


def test_unknown_method_lists_the_names():
    with pytest.raises(ValueError, match="unknown method 'fym-fast'; valid methods: fym, fym-no-heads, .*base"):
        get_methods(["fym", "fym-fast"])
    with pytest.raises(ValueError, match="no method given"):
        get_methods("")
