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
from .metrics import centred_error, displacement_cosine
from .pretrain import PretrainSettings, flow_loss, trainable
from .render import ObjectSpec, SceneSpec, render, track_colour

PASS_RATIO = 0.5  # pass: centred error below half of a motionless track's


def denoise_from(model: ToyBackbone, clip: torch.Tensor, caption: str, sigma: float, steps: int,
                 generator: torch.Generator) -> np.ndarray:
    """Euler-integrate the flow from the clip noised to `sigma` down to 0; uint8 frames (T, H, W, 3)."""
    text = model.encode_prompt(caption)
    x = (1 - sigma) * clip + sigma * torch.randn(clip.shape, generator=generator)
    levels = np.linspace(sigma, 0.0, steps + 1)
    with torch.no_grad():
        for a, b in zip(levels[:-1], levels[1:], strict=True):
            x = x + (b - a) * model.predict(x, torch.tensor([a * model.num_train_timesteps]), text)
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def sanity_gate(model: ToyBackbone, program: str, colour: str = "red", shape: str = "circle", steps: int = 500,
                lr: float = 1e-3, batch_size: int = 8, seeds: int = 4, sample_steps: int = 30,
                levels: tuple[float, ...] = (0.5, 0.9, 1.0)) -> dict:
    """Tune all weights on one clip of `program`, then score generations from each noise level."""
    clip = render(SceneSpec((ObjectSpec(shape, colour, program),)))
    x0 = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
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
    reference = track_colour(clip.frames, colour)
    size = float(max(clip.frames.shape[1:3]))
    static = np.repeat(reference.mean(0, keepdims=True), len(reference), axis=0)
    baseline = centred_error(reference, static, size)
    result: dict = {"program": program, "steps": steps, "final_loss": float(np.mean(losses[-50:])),
                    "static_baseline_error": baseline, "levels": {}}
    for sigma in levels:
        errors, cosines = [], []
        for seed in range(seeds):
            frames = denoise_from(model, x0, caption, sigma, sample_steps, torch.Generator().manual_seed(seed))
            track = track_colour(frames, colour)
            errors.append(centred_error(reference, track, size))
            cosines.append(displacement_cosine(reference, track))
        result["levels"][str(sigma)] = {"centred_error": float(np.nanmean(errors)),
                                        "displacement_cosine": float(np.nanmean(cosines))}
    result["passed"] = result["levels"][str(levels[-1])]["centred_error"] < PASS_RATIO * baseline
    return result
