"""Image-to-video stage 2: does the spatial LoRA learn to ignore the first-frame condition, and can the tiny
random I2V pipeline show it?

Tunes a spatial LoRA on every head of the tiny Wan2.1-I2V test pipeline (tests/tiny_wan.py) on single frames of a
moving textured square, conditioned either on the reference's first frame (the old stage 2) or on each frame itself
(stage 2 now), and measures on frames 1..8, before and after: the flow-matching MSE given either condition, and
`sensitivity`, the mean squared change of the prediction when the condition is swapped (how much the model uses
it). One-off experiment for docs/method.md, section 4.

    OMP_NUM_THREADS=1 python -m benchmarks.i2v_condition
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from follow_your_motion.backbones import load_backbone
from follow_your_motion.config import SpatialSettings
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import StepInputs, train_adapter
from follow_your_motion.runs import RunDir
from follow_your_motion.video import to_tensor

from .common import markdown_table, one_thread, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_wan import build_tiny_wan_i2v_pipeline  # noqa: E402

FRAMES = 9


def clip() -> np.ndarray:
    """A white square moving right over black, with a random green texture: (9, 32, 32, 3) uint8."""
    video = np.zeros((FRAMES, 32, 32, 3), np.uint8)
    for t in range(FRAMES):
        x = 2 + 20 * t // (FRAMES - 1)
        video[t, 12:20, x : x + 8] = 255
    noise = np.random.default_rng(0).integers(0, 120, video.shape[:3])
    video[..., 1] = (video[..., 1] // 2 + noise).astype(np.uint8)
    return video


def run(pipe: Path, scheme: str, steps: int, work: Path) -> dict:
    backbone = load_backbone(str(pipe))
    expert = backbone.experts[0]
    frames = clip()
    text = backbone.encode_prompt("a robot walks")
    video = to_tensor(frames)
    latents = torch.cat([backbone.encode_video(video[:, i : i + 1]) for i in range(FRAMES)])
    first = backbone.encode_image(frames[0], FRAMES, 32, 32).select_frames(torch.tensor([0]))
    own = [backbone.encode_image(frames[i], 1, 32, 32) for i in range(FRAMES)]

    def cond(i: int, which: str):
        return text.merged(first if which == "first" else own[i])

    def probe() -> dict:
        gen = torch.Generator().manual_seed(7)
        errors, sensitivity = {"first": [], "own": []}, []
        with torch.no_grad():
            for i in range(1, FRAMES):
                for _ in range(4):
                    noise = torch.randn(latents[i : i + 1].shape, generator=gen)
                    s = torch.rand(1, generator=gen) * 0.8 + 0.1
                    noisy, target = (1 - s) * latents[i : i + 1] + s * noise, noise - latents[i : i + 1]
                    pred = {w: backbone.predict(expert, noisy, s * 1000, cond(i, w)) for w in ("first", "own")}
                    for w, p in pred.items():
                        errors[w].append(((p - target) ** 2).mean().item())
                    sensitivity.append(((pred["first"] - pred["own"]) ** 2).mean().item())
        return {"mse_given_first": float(np.mean(errors["first"])), "mse_given_own": float(np.mean(errors["own"])),
                "sensitivity": float(np.mean(sensitivity))}

    before = probe()
    add_masked_lora(expert, "spatial", {layer: list(range(site.heads)) for layer, site in enumerate(expert.sites)},
                    8, 8)
    settings = SpatialSettings(steps=steps, rank=8, lr=3e-3, checkpoint_every=10**6)

    def inputs(step: int, generator: torch.Generator) -> StepInputs:
        i = int(torch.randint(FRAMES, (1,), generator=generator))
        return StepInputs(latents[i : i + 1], cond(i, scheme))

    backbone.set_active_adapters({"spatial": 1.0})
    train_adapter(backbone, expert, RunDir(work / f"run-{scheme}"), "spatial", "spatial", settings, inputs)
    return {"before": before, "after": probe()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/i2v_condition"))
    args = parser.parse_args(argv)
    one_thread()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_tiny_wan_i2v_pipeline(Path(tmp) / "pipe")
        results = {scheme: run(pipe, scheme, args.steps, Path(tmp)) for scheme in ("first", "own")}
    rows = [[scheme, when, *(f"{r[when][k]:.3g}" for k in ("mse_given_first", "mse_given_own", "sensitivity"))]
            for scheme, r in results.items() for when in ("before", "after")]
    table = markdown_table(["stage 2 conditioned on", "LoRA", "MSE given first frame", "MSE given own frame",
                            "sensitivity"], rows)
    write_result(args.out, {"steps": args.steps, "results": results}, table, "i2v_condition", argv)


if __name__ == "__main__":
    main()
