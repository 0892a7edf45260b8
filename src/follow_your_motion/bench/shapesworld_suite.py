"""The shipped ShapesWorld suite (``suites/shapesworld.yaml``) and the generator that writes it.

``shapesworld_suite`` draws cases on the fly over the four ShapesWorld categories; the shipped file is its
output for ``n_per_category=2, seed=0`` (a test checks that they still agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..toyworld import render as sw
from .manifest import Manifest, validate_manifest

SHAPESWORLD_SUITE = Path(__file__).with_name("suites") / "shapesworld.yaml"
SHAPESWORLD_CATEGORIES = {"single": "single-object", "multi": "multi-object", "camera": "camera", "human": "human"}


def _shapesworld_scene(rng: np.random.Generator, category: str) -> sw.SceneSpec:
    """One scene of a category moving with motions the toy model never saw captioned: held-out programs for
    objects (camera scenes: a held-out object program under the camera), the figure's own programs for
    `human` (the only ones a figure has)."""
    for _ in range(100):
        scene = sw.random_scene(rng, category, sw.HELDOUT_PROGRAMS)
        objects = scene.objects
        if category == "camera":  # random_scene's camera object is static; give it a held-out motion
            objects = tuple(_replace(o, program=str(rng.choice(sw.HELDOUT_PROGRAMS)), size=0.2) for o in objects)
        objects = tuple(
            _replace(o, size=round(o.size, 3), anchor=(round(o.anchor[0], 3), round(o.anchor[1], 3)),
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


def _replace(obj: sw.ObjectSpec, **changes: Any) -> sw.ObjectSpec:
    fields = {"shape": obj.shape, "colour": obj.colour, "program": obj.program, "size": obj.size,
              "anchor": obj.anchor, "phase": obj.phase}
    return sw.ObjectSpec(**(fields | changes))


def _target(rng: np.random.Generator, objects: tuple[sw.ObjectSpec, ...]) -> str:
    """A prompt naming, for each reference object in order, a colour no reference object has and (except for
    the figure, whose motions only a figure can make) another shape."""
    free = [c for c in sw.COLOURS if c not in {o.colour for o in objects}]
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
            scene = _shapesworld_scene(rng, category)
            spec = {
                "objects": [
                    {"shape": o.shape, "colour": o.colour, "program": o.program, "size": o.size,
                     "anchor": list(o.anchor), "phase": o.phase}
                    for o in scene.objects
                ],
                "background": scene.background,
                "camera": scene.camera,
            }
            targets: list[str] = []
            while len(targets) < n_targets:
                target = _target(rng, scene.objects)
                if target not in targets:
                    targets.append(target)
            cases.append({
                "id": f"{category}-{i}", "category": SHAPESWORLD_CATEGORIES[category],
                "reference": {"shapesworld": spec}, "caption": sw.caption(scene), "targets": targets,
            })
    description = (f"ShapesWorld: {n_per_category} case(s) per category, seed {seed}; "
                   "regenerate with bench.shapesworld_suite")
    return validate_manifest({"name": "shapesworld", "description": description, "cases": cases},
                             f"shapesworld_suite(seed={seed})")
