"""Random ShapesWorld scenes of each category: what pretraining draws its clips from and the suites their cases.
Every draw comes from the generator passed in, so a scene is a pure function of (generator state, arguments)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import InputError
from .paths import draw_prior_path, room_for
from .render import (
    CAMERA_PROGRAMS,
    CATEGORIES,
    COLOURS,
    FIGURE,
    FREE_PROGRAM,
    HELDOUT_PROGRAMS,
    HUMAN_PROGRAMS,
    PRETRAIN_PROGRAMS,
    SHAPES,
    ObjectSpec,
    SceneSpec,
    check,
)


def random_scene(
    rng: np.random.Generator,
    category: str = "single",
    programs: tuple[str, ...] = PRETRAIN_PROGRAMS,
    num_frames: int = 9,
    height: int = 32,
    width: int = 32,
    anchor_spread: float = 1.0,
    free_paths: float = 0.0,
) -> SceneSpec:
    """Sample a scene of a category. single/multi draw object programs from ``programs``; camera scenes hold
    one static object over the textured background; human scenes use ``programs`` ∩ HUMAN_PROGRAMS, or all
    HUMAN_PROGRAMS when that is empty. Anchors are drawn from the middle ``anchor_spread`` of [0, 1] on each
    axis: 1 places a path anywhere it fits, 0 centres every path in the frame. ``free_paths``: the share of
    single/multi objects that follow a random path of ``toyworld.paths`` instead (0 draws exactly what it drew
    before the option existed)."""
    check("category", category, CATEGORIES)
    if not 0.0 <= anchor_spread <= 1.0:
        raise InputError(f"anchor_spread must lie in [0, 1], got {anchor_spread}")
    if not 0.0 <= free_paths <= 1.0:
        raise InputError(f"free_paths must lie in [0, 1], got {free_paths}")
    for p in programs:
        check("program", p, PRETRAIN_PROGRAMS + HELDOUT_PROGRAMS + HUMAN_PROGRAMS)
    colours = list(COLOURS)

    def spread(u: float) -> float:  # spread 1 keeps u itself, bit for bit, so earlier runs' batches do not change
        return u if anchor_spread == 1.0 else 0.5 + anchor_spread * (u - 0.5)

    def obj(colour: str, program: str, shape: str | None = None, size: tuple = (0.2, 0.3)) -> ObjectSpec:
        spec = ObjectSpec(
            shape=shape or str(rng.choice(SHAPES)),
            colour=colour,
            program=program,
            size=float(rng.uniform(*size)),
            anchor=tuple(float(spread(u)) for u in rng.uniform(size=2)),
            phase=float(rng.uniform()),
        )
        if program != FREE_PROGRAM:
            return spec
        path = draw_prior_path(rng, num_frames, room_for(spec.size, height, width))
        return replace(spec, path=tuple((float(x), float(y)) for x, y in path))

    kw = dict(num_frames=num_frames, height=height, width=width)
    if category == "human":
        pool = tuple(p for p in programs if p in HUMAN_PROGRAMS) or HUMAN_PROGRAMS
        o = obj(str(rng.choice(colours)), str(rng.choice(pool)), FIGURE, (0.5, 0.65))
        return SceneSpec(objects=(o,), **kw)
    if category == "camera":
        cam = str(rng.choice(CAMERA_PROGRAMS))
        return SceneSpec((obj(str(rng.choice(colours)), "static"),), background="textured", camera=cam, **kw)
    pool = tuple(p for p in programs if p not in HUMAN_PROGRAMS)
    if not pool:
        raise InputError(f"no object programs for category {category!r} in {programs}")

    def program() -> str:  # no draw at all when free_paths is 0, so the other draws stay as they were
        return FREE_PROGRAM if free_paths and rng.random() < free_paths else str(rng.choice(pool))

    n = 1 if category == "single" else 2
    picked = rng.choice(len(colours), size=n, replace=False)
    objs = tuple(obj(colours[int(c)], program()) for c in picked)
    return SceneSpec(objects=objs, **kw)
