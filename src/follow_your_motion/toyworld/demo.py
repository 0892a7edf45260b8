"""The README demo: transfer a held-out motion from a rendered reference to a new object with the toy
model, and score it against the renderer's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..precedence import resolve_config
from ..runs import atomic_write_text
from ..transfer import Transfer
from ..video import write_video
from .examples import EXAMPLES, FPS
from .metrics import colour_of, transfer_metrics
from .render import render


def run_demo(out: Path, example: str = "single-orbit-cw", target_prompt: str = "a blue square",
             device: str = "auto") -> dict:
    """Writes reference.mp4, samples/ (result, base model, side-by-sides) and metrics.json to `out`."""
    if example not in EXAMPLES:
        raise InputError(f"unknown example {example!r} (choose from {', '.join(EXAMPLES)})")
    clip = render(EXAMPLES[example])
    reference = write_video(Path(out) / "reference.mp4", clip.frames, FPS)
    cfg = resolve_config({"reference": str(reference), "prompt": clip.caption, "target_prompt": target_prompt,
                          "model": {"device": device}})
    job = Transfer(cfg, Path(out))
    tuned = job.all()
    base = job.generate(settings=cfg.generate.model_copy(update={"motion_scale": 0.0}), name="base")
    ref_colour, target_colour = colour_of(clip.caption), colour_of(target_prompt)
    metrics = {
        "example": example, "reference_caption": clip.caption, "target_prompt": target_prompt,
        "fym": transfer_metrics(clip.frames, ref_colour, tuned.frames, target_colour),
        "base_model": transfer_metrics(clip.frames, ref_colour, base.frames, target_colour),
        "outputs": {k: str(p) for k, p in tuned.paths.items()},
    }
    atomic_write_text(Path(out) / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
