"""The shipped ShapesWorld suite (``suites/shapesworld.yaml``) and the generator that writes it.

``shapesworld_suite`` draws cases on the fly over the four ShapesWorld categories; the shipped file is its
output for ``n_per_category=2, seed=0`` (a test checks that they still agree).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..toyworld import render as sw
from ..toyworld.scenes import random_scene
from .manifest import Manifest, validate_manifest

SHAPESWORLD_SUITE = Path(__file__).with_name("suites") / "shapesworld.yaml"
SHAPESWORLD_CATEGORIES = {"single": "single-object", "multi": "multi-object", "camera": "camera", "human": "human"}


def heldout_scene(
    rng: np.random.Generator, category: str, programs: tuple[str, ...] = sw.HELDOUT_PROGRAMS
) -> sw.SceneSpec:
    """One scene of a category moving with motions the toy model never saw captioned: `programs` (held-out ones)
    for objects (camera scenes: a held-out object program under the camera), the figure's own programs for
    `human` (the only ones a figure has). Sizes, anchors and phases are rounded to 3 decimals, as a suite lists them."""
    for _ in range(100):
        scene = random_scene(rng, category, programs)
        objects = scene.objects
        if category == "camera":  # random_scene's camera object is static; give it a held-out motion
            objects = tuple(replace(o, program=str(rng.choice(sw.HELDOUT_PROGRAMS)), size=0.2) for o in objects)
        objects = tuple(
            replace(o, size=round(o.size, 3), anchor=(round(o.anchor[0], 3), round(o.anchor[1], 3)),
                     phase=round(o.phase, 3) % 1.0)
            for o in objects
        )
        scene = sw.SceneSpec(objects, background=scene.background, camera=scene.camera)
        try:
            sw.render(scene)
        except ValueError:  # cannot stay in frame: draw again
            continue
        return scene
    raise RuntimeError(f"could not draw a valid {category} scene")  # pragma: no cover - never seen


def scene_spec(scene: sw.SceneSpec) -> dict[str, Any]:
    """A scene as a manifest's ``shapesworld`` reference (frame count and size left open)."""
    objects = []
    for o in scene.objects:
        objects.append({"shape": o.shape, "colour": o.colour, "program": o.program, "size": o.size,
                        "anchor": list(o.anchor), "phase": o.phase, "stripes": o.stripes})
    return {"objects": objects, "background": scene.background, "camera": scene.camera}


def target_prompt(rng: np.random.Generator, objects: tuple[sw.ObjectSpec, ...], exclude: Collection[str] = ()) -> str:
    """A prompt naming, for each of `objects` in order, a colour none of them is drawn in (nor any of `exclude`)
    and (except for the figure, whose motions only a figure can make) another shape."""
    used = {c for o in objects for c in o.colours} | set(exclude)
    free = [c for c in sw.COLOURS if c not in used]
    colours = rng.choice(len(free), size=len(objects), replace=False)
    phrases = []
    for o, c in zip(objects, colours, strict=True):
        shape = o.shape if o.shape == sw.FIGURE else str(rng.choice([s for s in sw.SHAPES if s != o.shape]))
        phrases.append(f"a {free[int(c)]} {shape}")
    return " and ".join(phrases)


def shapesworld_suite(n_per_category: int = 2, seed: int = 0, n_targets: int = 1) -> Manifest:
    """Cases drawn on the fly over the four ShapesWorld categories (ids ``<category>-<i>``).

    Objects move with HELDOUT_PROGRAMS (single, multi, and camera scenes, where a held-out object motion is
    combined with a camera program over the textured background); human cases use the figure's programs.
    Each case has `n_targets` prompts naming other colours (and shapes) than the reference. Frame count and
    size are left open, so a run renders them at its own video settings. Deterministic in `seed`."""
    if n_per_category < 1 or n_targets < 1:
        raise InputError("n_per_category and n_targets must be >= 1")
    rng = np.random.default_rng(seed)
    cases = []
    for category in sw.CATEGORIES:
        for i in range(n_per_category):
            scene = heldout_scene(rng, category)
            targets: list[str] = []
            while len(targets) < n_targets:
                target = target_prompt(rng, scene.objects)
                if target not in targets:
                    targets.append(target)
            cases.append({
                "id": f"{category}-{i}", "category": SHAPESWORLD_CATEGORIES[category],
                "reference": {"shapesworld": scene_spec(scene)}, "caption": sw.caption(scene), "targets": targets,
            })
    description = (f"ShapesWorld: {n_per_category} case(s) per category, seed {seed}; "
                   "regenerate with bench.shapesworld_suite")
    return validate_manifest({"name": "shapesworld", "description": description, "cases": cases},
                             f"shapesworld_suite(seed={seed})")
