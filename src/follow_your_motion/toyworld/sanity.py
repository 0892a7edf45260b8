"""The one-clip sanity gate: tuned on one clip, does the toy model reproduce that clip's trajectory?

If the base model cannot learn one trajectory when all of its weights are tuned on that very clip, no
LoRA can transfer it. We also denoise from the clip itself noised to a few levels, which shows where in
sampling the trajectory is lost.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones.toy import ToyBackbone
from .metrics import centred_error, displacement_cosine, relative_size_error, size_track
from .pretrain import PretrainSettings, flow_loss, trainable
from .render import ObjectSpec, SceneSpec, render, track_colour

PASS_RATIO = 0.5  # pass: error below half of a motionless track's
SCALE_PROGRAMS = ("grow-shrink",)  # the centroid stays put: the gate compares the object's size over time


def path_track(program: str, frames: np.ndarray, colour: str) -> np.ndarray:
    """What the gate follows of the `colour` object: its size per frame for a program that only changes the
    size, else its centroid track."""
    return size_track(frames, colour) if program in SCALE_PROGRAMS else track_colour(frames, colour)


def path_error(program: str, reference: np.ndarray, generated: np.ndarray, size: float) -> float:
    """The gate's error between two `path_track`s: relative size error or centred trajectory error."""
    if program in SCALE_PROGRAMS:
        return relative_size_error(reference, generated)
    return centred_error(reference, generated, size)


def denoise_from(model: ToyBackbone, clip: torch.Tensor, caption: str, sigma: float, steps: int,
                 generator: torch.Generator) -> np.ndarray:
    """Euler-integrate the flow from the clip noised to `sigma` down to 0; uint8 frames (T, H, W, 3)."""
    text = model.encode_prompt(caption)
    x = (1 - sigma) * clip + sigma * model.draw_noise(clip.shape, generator).to(clip.device)
    levels = np.linspace(sigma, 0.0, steps + 1)
    with torch.no_grad():
        for a, b in zip(levels[:-1], levels[1:], strict=True):
            x = x + (b - a) * model.predict(model.experts[0], x, torch.tensor([a * model.num_train_timesteps]), text)
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def sanity_gate(model: ToyBackbone, program: str, colour: str = "red", shape: str = "circle", steps: int = 500,
                lr: float = 1e-3, batch_size: int = 8, seeds: int = 4, sample_steps: int = 30,
                levels: tuple[float, ...] = (0.5, 0.9, 1.0)) -> dict:
    """Tune all weights on one clip of `program`, then score generations from each noise level."""
    clip = render(SceneSpec((ObjectSpec(shape, colour, program),)))
    x0 = (torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1).to(model.device)
    caption = f"a {colour} {shape}"
    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    settings = PretrainSettings()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in tqdm(range(steps), desc=f"one-clip tuning ({program})"):
        loss = flow_loss(model, x0.expand(batch_size, -1, -1, -1, -1), [caption] * batch_size, generator, settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
    for p in params:
        p.requires_grad_(False)
    reference = path_track(program, clip.frames, colour)
    size = float(max(clip.frames.shape[1:3]))
    # the motionless clip: the same object, static (its position does not matter: both errors are invariant to it)
    still = render(SceneSpec((ObjectSpec(shape, colour, "static"),), num_frames=len(clip.frames),
                             height=clip.frames.shape[1], width=clip.frames.shape[2]))
    baseline = path_error(program, reference, path_track(program, still.frames, colour), size)
    metric = "relative_size_error" if program in SCALE_PROGRAMS else "centred_error"
    result: dict = {"program": program, "steps": steps, "final_loss": float(np.mean(losses[-50:])),
                    "metric": metric, "static_baseline_error": baseline, "levels": {}}
    for sigma in levels:
        errors, cosines = [], []
        for seed in range(seeds):
            frames = denoise_from(model, x0, caption, sigma, sample_steps, torch.Generator().manual_seed(seed))
            generated = path_track(program, frames, colour)
            errors.append(path_error(program, reference, generated, size))
            if program not in SCALE_PROGRAMS:  # a scale program's centroid never moves: no direction to compare
                cosines.append(displacement_cosine(reference, generated))
        result["levels"][str(sigma)] = {metric: float(np.nanmean(errors))}
        if cosines:
            result["levels"][str(sigma)]["displacement_cosine"] = float(np.nanmean(cosines))
    result["passed"] = bool(result["levels"][str(levels[-1])][metric] < PASS_RATIO * baseline)
    return result
