"""Base-model evaluation of the toy model: does it draw what the prompt says, and does it move coherently?

Every generated clip is measured with the renderer's own colour segmentation:
  colour     - the prompt's colour covers more pixels than any other named colour;
  shape      - the object's mask fills its bounding box like the prompt's shape does: nearest of the fill
               ratios measured on the renderer's own shapes at sizes 0.2-0.3 of a 32-pixel frame;
  direction  - for prompts with a direction, the first-to-last centroid displacement is within 45 degrees
               of it (8 directions);
  smooth     - the object is found in every frame and never jumps more than `MAX_JUMP` pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backbones.toy import ToyBackbone
from ..runs import atomic_write_text
from .metrics import guess_shape
from .render import COLOURS, LINE_PROGRAMS, SHAPES, segment_colour, track_colour

DIRECTIONS = {  # image coordinates: y grows downwards
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}
MAX_JUMP = 4.0  # pixels between consecutive frames
MIN_TRAVEL = 2.0  # pixels: a displacement shorter than this has no direction


def eval_prompts(count: int = 64) -> list[tuple[str, str, str, str | None]]:
    """(prompt, colour, shape, direction or None): colours x shapes x {still, 8 directions}, cycled."""
    motions: list[str | None] = [None, *LINE_PROGRAMS]
    out = []
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        direction = motions[(i + i // len(COLOURS)) % len(motions)]
        words = f"a {colour} {shape}"
        if direction is None:
            words += " stays still"
        else:
            words += " moves " + direction.replace("-", " ")
        out.append((words, colour, shape, direction))
    return out


def measure_clip(frames: np.ndarray, colour: str, shape: str, direction: str | None) -> dict:
    """The four checks of one generated clip."""
    areas = {name: segment_colour(frames, name).sum() for name in COLOURS}
    guessed, fill = guess_shape(frames, colour)
    track = track_colour(frames, colour)
    found = ~np.isnan(track).any(1)
    jumps = np.linalg.norm(np.diff(track, axis=0), axis=1)
    smooth = bool(found.all() and (jumps <= MAX_JUMP).all())
    direction_ok = None
    if direction is not None and found.any():
        first, last = track[found][0], track[found][-1]
        move = last - first
        want = np.array(DIRECTIONS[direction], dtype=float)
        cos = move @ want / (np.linalg.norm(move) * np.linalg.norm(want) + 1e-9)
        direction_ok = bool(np.linalg.norm(move) >= MIN_TRAVEL and cos >= np.cos(np.pi / 8))
    return {"colour_ok": bool(max(areas, key=areas.get) == colour and areas[colour] > 0), "shape": guessed,
            "shape_ok": guessed == shape, "fill": fill, "smooth": smooth, "direction_ok": direction_ok}


def evaluate(model: ToyBackbone, count: int = 64, steps: int = 20, guidance: float = 3.0, seed: int = 0,
             out: Path | None = None) -> dict:
    """Generate one clip per evaluation prompt and summarise the checks; writes eval.json to `out`."""
    video = {"frames": 9, "height": 32, "width": 32}
    rows = []
    for i, (prompt, colour, shape, direction) in enumerate(tqdm(eval_prompts(count), desc="toy eval")):
        frames = model.generate(prompt, negative_prompt="", num_frames=video["frames"], height=video["height"],
                                width=video["width"], steps=steps, guidance=guidance, seed=seed + i,
                                adapter_scales={})
        rows.append({"prompt": prompt, **measure_clip(frames, colour, shape, direction)})
    directional = [r["direction_ok"] for r in rows if r["direction_ok"] is not None]
    summary = {
        "prompts": count, "steps": steps, "guidance": guidance, "seed": seed,
        "noise_correlation": model.noise_correlation,
        "colour_accuracy": float(np.mean([r["colour_ok"] for r in rows])),
        "shape_accuracy": float(np.mean([r["shape_ok"] for r in rows])),
        "direction_accuracy": float(np.mean(directional)) if directional else None,
        "smoothness": float(np.mean([r["smooth"] for r in rows])),
        "rows": rows,
    }
    if out is not None:
        atomic_write_text(Path(out) / "eval.json", json.dumps(summary, indent=1))
    return summary
