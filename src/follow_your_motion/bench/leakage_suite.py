"""The ShapesWorld leakage suite (``benchmarks/suites/toy_leakage.yaml``) and the generator that writes it.

Every case's reference shows an appearance its target prompt leaves out, so whatever of it reaches the result
is leakage (``toyworld.leakage``): a textured or a dim-coloured background (no prompt names a background), an
object in stripes of a second colour, or a second, static object of another colour. The moving object has a
held-out motion; the target prompt names a colour the reference is not drawn in (nor its background's hue) and
another shape. Write the shipped file with ``python -m follow_your_motion.bench.leakage_suite PATH``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..toyworld import render as sw
from ..toyworld.leakage import frames_showing
from .manifest import Manifest, dump_manifest, validate_manifest
from .shapesworld_suite import heldout_scene, scene_spec, target_prompt

KINDS = ("textured", "dim-background", "stripes", "distractor")
"""What can leak, one kind per group of cases: case ids ``<kind>-<i>``, tags ``leak:<kind>``."""
SHIPPED = {"n_per_kind": 3, "seed": 0}
"""The settings of ``benchmarks/suites/toy_leakage.yaml``."""
CHECK_SIZE = (9, 32, 32)  # frames, height, width the toy model runs at: every reference colour shows in every frame


def _shows_every_colour(scene: sw.SceneSpec) -> bool:
    frames = sw.render(replace(scene, num_frames=CHECK_SIZE[0], height=CHECK_SIZE[1], width=CHECK_SIZE[2])).frames
    return all(frames_showing(frames, c) == len(frames) for o in scene.objects for c in o.colours)


def _apart(first: sw.ObjectSpec, second: sw.ObjectSpec) -> bool:
    """Whether the two objects never touch one pixel in the same frame (neither occludes the other)."""
    masks = [sw.render(sw.SceneSpec((o,), *CHECK_SIZE)).frames.any(axis=-1) for o in (first, second)]
    return not (masks[0] & masks[1]).any()


def _other_colour(rng: np.random.Generator, used: set[str]) -> str:
    return str(rng.choice([c for c in sw.COLOURS if c not in used]))


def leakage_case(rng: np.random.Generator, kind: str, program: str) -> tuple[sw.SceneSpec, str]:
    """A reference scene of one leakage kind whose moving object follows `program`, and its target prompt."""
    if kind not in KINDS:
        raise InputError(f"unknown leakage kind {kind!r}; valid: {', '.join(KINDS)}")
    for _ in range(100):
        moving = heldout_scene(rng, "single", (program,)).objects[0]
        exclude: set[str] = set()
        if kind == "textured":
            scene = sw.SceneSpec((moving,), background="textured")
        elif kind == "dim-background":
            hue = _other_colour(rng, {moving.colour, "white"})  # dim white is a plain grey: not a coloured one
            scene, exclude = sw.SceneSpec((moving,), background=f"dim-{hue}"), {hue}
        elif kind == "stripes":
            scene = sw.SceneSpec((replace(moving, stripes=_other_colour(rng, {moving.colour})),))
        else:
            still = replace(heldout_scene(rng, "single", ("static",)).objects[0],  # drawn and rounded alike
                            colour=_other_colour(rng, {moving.colour}))
            if not _apart(moving, still):
                continue
            scene, exclude = sw.SceneSpec((moving, still)), {still.colour}
        if _shows_every_colour(scene):
            return scene, target_prompt(rng, scene.objects[:1], exclude)
    raise RuntimeError(f"could not draw a {kind} case with {program}")  # pragma: no cover - never seen


def leakage_suite(n_per_kind: int = 3, seed: int = 0) -> Manifest:
    """`n_per_kind` cases of each of ``KINDS``; the moving objects' programs go through the held-out programs in
    a seeded order. Frame count and size are left open (a run renders them at its own video settings).
    Deterministic in `seed`."""
    if n_per_kind < 1:
        raise InputError(f"n_per_kind must be >= 1, got {n_per_kind}")
    rng = np.random.default_rng(seed)
    order = [str(p) for p in rng.permutation(sw.HELDOUT_PROGRAMS)]
    cases = []
    for k, kind in enumerate(KINDS):
        for i in range(n_per_kind):
            scene, target = leakage_case(rng, kind, order[(k * n_per_kind + i) % len(order)])
            cases.append({
                "id": f"{kind}-{i}", "category": "multi-object" if kind == "distractor" else "single-object",
                "reference": {"shapesworld": scene_spec(scene)}, "caption": sw.caption(scene), "targets": [target],
                "tags": [f"leak:{kind}"],
            })
    description = (f"ShapesWorld leakage: {n_per_kind} case(s) per kind ({', '.join(KINDS)}), seed {seed}; "
                   "regenerate with bench.leakage_suite")
    return validate_manifest({"name": "toy-leakage", "description": description, "cases": cases},
                             f"leakage_suite(seed={seed})")


HEADER = """\
The leakage suite of docs/benchmark.md ("Leakage"): references whose appearance the target prompt leaves out
(textured background, dim-coloured background, striped object, static distractor; 3 cases each, held-out
motions), scored by background_leak and object_colour_leak. Run:
  OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m follow_your_motion.cli bench run \\
      benchmarks/suites/toy_leakage.yaml \\
      --methods fym,fym-no-heads,fym-no-rope,fym-dense,two-stage-lora,full-lora,base --out runs/leakage
Generated by follow_your_motion.bench.leakage_suite.leakage_suite(n_per_kind=3, seed=0):
  python -m follow_your_motion.bench.leakage_suite benchmarks/suites/toy_leakage.yaml
a test checks that this file still equals that output."""


def write_leakage_suite(path: str | Path) -> Path:
    """Write the shipped suite (``SHIPPED`` settings, with ``HEADER``) to `path`."""
    return dump_manifest(leakage_suite(**SHIPPED), path, HEADER)


if __name__ == "__main__":
    print(write_leakage_suite(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/suites/toy_leakage.yaml"))
