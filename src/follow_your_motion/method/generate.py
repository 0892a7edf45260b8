"""Inference: base model + motion LoRA (and optionally the spatial LoRA) + a new prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backbones.base import Backbone, StepHook
from ..config import GenerateSettings
from ..video import side_by_side, write_video


def generate_video(
    backbone: Backbone, prompt: str, settings: GenerateSettings, frames: int, height: int, width: int,
    image: np.ndarray | None = None, step_hook: StepHook | None = None,
) -> np.ndarray:
    """Sample a video (T, H, W, 3) uint8 with standard RoPE positions over all frames (from `image`, the first
    frame, for an image-to-video model; `step_hook`: a training-free guidance, method/guidance.py)."""
    return backbone.generate(
        prompt,
        negative_prompt=settings.negative_prompt,
        num_frames=settings.frames or frames,
        height=settings.height or height,
        width=settings.width or width,
        steps=settings.steps,
        guidance=settings.guidance,
        guidance_2=settings.guidance_2,
        seed=settings.seed,
        adapter_scales={"motion": settings.motion_scale, "spatial": settings.spatial_scale},
        image=image,
        step_hook=step_hook,
    )


def write_outputs(result: np.ndarray, reference: np.ndarray, folder: Path, name: str, fps: float) -> dict[str, Path]:
    """The result as mp4 and a (reference | result) comparison as mp4 and gif."""
    pair = side_by_side(reference, result)
    return {
        "video": write_video(folder / f"{name}.mp4", result, fps),
        "side_by_side": write_video(folder / f"{name}_side_by_side.mp4", pair, fps),
        "side_by_side_gif": write_video(folder / f"{name}_side_by_side.gif", pair, fps),
    }
