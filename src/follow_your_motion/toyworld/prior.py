"""The toy model's motion prior: what paths does it draw when the prompt names only the appearance?

A real text-to-video model asked for "a red circle" draws it still, gliding, curving, turning corners, at many
sizes of motion; a model pretrained on straight lines alone draws a still blob or a line. Each generated clip's
object (the prompt's colour, tracked by the renderer's colour segmentation) is put in one of ``PATH_KINDS``:

lost      the object is missing from some frame: no path to judge;
still     its path's amplitude (half the range of the centroid, the larger axis) is below ``STILL``;
jumped    some step between two frames is longer than ``JUMP``, more than any pretraining path moves in one
          (``paths.MAX_STEP``): the object vanishes in one place and appears in another, a broken sample, not a
          motion;
cornered  two consecutive steps, each at least ``MIN_STEP`` long, turn by ``CORNER_DEGREES`` or more;
curved    otherwise, if some point lies further than ``CURVED`` of the path's length from the straight line
          that fits the path best (its principal axis): an arc, a loop, a wave;
straight  otherwise.

Lengths are fractions of the frame (the larger side). The summary gives each kind's share of the clips and the
spread of the amplitudes of those found in every frame that do not jump (quantiles ``QUANTILES``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backbones.toy import ToyBackbone
from ..runs import atomic_write_text
from .paths import MAX_STEP
from .render import COLOURS, PRETRAIN_PROGRAMS, SHAPES, render, track_colour
from .scenes import random_scene

PATH_KINDS: tuple[str, ...] = ("lost", "still", "jumped", "straight", "curved", "cornered")
STILL = 0.04  # amplitude below this (1.3 px at 32 px) is standing still
JUMP = MAX_STEP + 0.05  # the data's longest step, plus tracking noise (1.6 px at 32 px)
MIN_STEP = 0.03  # a step shorter than this (1 px at 32 px) has no reliable direction
CORNER_DEGREES = 90.0  # sharper than a right angle between two frames (an orbit turns 45 degrees a step at 9 frames)
CURVED = 0.1  # off the best line by this share of the path's length
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def amplitude(track: np.ndarray, size: float) -> float:
    """Half the range of a (T, 2) track on its larger axis, / `size`."""
    return float((np.nanmax(track, 0) - np.nanmin(track, 0)).max() / 2 / size)


def classify_path(track: np.ndarray, size: float) -> str:
    """The kind (``PATH_KINDS``) of a (T, 2) centroid track in pixels, on a frame of `size` pixels."""
    if np.isnan(track).any():
        return "lost"
    if amplitude(track, size) < STILL:
        return "still"
    steps = np.diff(track, axis=0) / size
    lengths = np.linalg.norm(steps, axis=1)
    if lengths.max() > JUMP:
        return "jumped"
    both = (lengths[:-1] >= MIN_STEP) & (lengths[1:] >= MIN_STEP)
    cos = (steps[:-1] * steps[1:]).sum(1) / np.maximum(lengths[:-1] * lengths[1:], 1e-12)
    if (both & (cos <= np.cos(np.radians(CORNER_DEGREES)))).any():
        return "cornered"
    centred = (track - track.mean(0)) / size
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    along = centred @ axis
    off = np.abs(centred @ np.array([-axis[1], axis[0]]))
    return "curved" if off.max() > CURVED * max(np.ptp(along), 1e-12) else "straight"


def prior_prompts(count: int) -> list[tuple[str, str]]:
    """(prompt, colour): appearance only, "a <colour> <shape>", every colour with every shape in turn."""
    pairs = [(c, s) for s in SHAPES for c in COLOURS]
    return [(f"a {c} {s}", c) for c, s in (pairs[i % len(pairs)] for i in range(count))]


def summarise(rows: list[dict]) -> dict:
    """Each kind's share of the rows and the quantiles of the amplitudes of the paths found in every frame that
    do not jump (a jump's amplitude measures the break, not a motion)."""
    found = [r["amplitude"] for r in rows if r["kind"] not in ("lost", "jumped")]
    return {
        "clips": len(rows),
        "shares": {kind: sum(r["kind"] == kind for r in rows) / len(rows) for kind in PATH_KINDS},
        "amplitude_quantiles": dict(zip(map(str, QUANTILES), np.quantile(found, QUANTILES).tolist(), strict=True))
        if found else None,
    }


def measure_prior(model: ToyBackbone, count: int = 48, steps: int = 20, guidance: float = 3.0, seed: int = 0,
                  out: Path | None = None) -> dict:
    """Generate `count` clips from appearance-only prompts (seeds seed..seed+count-1) and sort their paths into
    kinds; writes prior.json (summary and every clip's row, with its track in pixels, so that a change of the
    kinds' thresholds can be applied to it without generating again) to `out`."""
    video = {"frames": 9, "height": 32, "width": 32}
    size = float(max(video["height"], video["width"]))
    rows = []
    for i, (prompt, colour) in enumerate(tqdm(prior_prompts(count), desc="toy prior")):
        frames = model.generate(prompt, negative_prompt="", num_frames=video["frames"], height=video["height"],
                                width=video["width"], steps=steps, guidance=guidance, seed=seed + i,
                                adapter_scales={})
        track = track_colour(frames, colour)
        found = not np.isnan(track).any()
        rows.append({"prompt": prompt, "seed": seed + i, "kind": classify_path(track, size),
                     "amplitude": amplitude(track, size) if found else None,
                     "track": [[None if np.isnan(v) else round(float(v), 2) for v in point] for point in track]})
    summary = {"steps": steps, "guidance": guidance, "seed": seed, **summarise(rows), "rows": rows}
    if out is not None:
        atomic_write_text(Path(out) / "prior.json", json.dumps(summary, indent=1))
    return summary


def measure_data(count: int = 1000, free_paths: float = 0.5, anchor_spread: float = 0.2, seed: int = 0,
                 out: Path | None = None) -> dict:
    """The same summary for the pretraining data itself: `count` one-object scenes drawn as pretraining draws
    them (straight-line programs, and `free_paths` of random paths), their exact tracks: what the prior is
    taught, to set beside what the model draws. Writes prior-data.json to `out`."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        scene = random_scene(rng, "single", PRETRAIN_PROGRAMS, anchor_spread=anchor_spread, free_paths=free_paths)
        track = next(iter(render(scene).tracks.values())).centroid
        size = float(max(scene.height, scene.width))
        rows.append({"program": scene.objects[0].program, "kind": classify_path(track, size),
                     "amplitude": amplitude(track, size)})
    summary = {"free_paths": free_paths, "anchor_spread": anchor_spread, "seed": seed, **summarise(rows)}
    if out is not None:
        atomic_write_text(Path(out) / "prior-data.json", json.dumps(summary, indent=1))
    return summary
