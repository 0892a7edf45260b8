"""What the step-time benchmarks (`stage_step`, `compile_step`) share: their random model and clip arguments, the
inputs built from them, and one timed call of stage 2 or stage 3 through the project's training loop."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch

from follow_your_motion.config import MotionSettings, SpatialSettings
from follow_your_motion.method.train import motion_inputs, spatial_inputs

from .common import add_lora, half_heads, small_config, text_condition, train_steps, transformer_backbone
from .cost_model import WanConfig


def add_stage_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The random transformer, the clip it tunes on and the timing rounds."""
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=84, help="F latent frames of the clip")
    parser.add_argument("--latent", default="12x16", help="latent height x width of a frame (patch 2x2)")
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per call (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved rounds")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (the Wan recipe)")


@dataclass
class StageInputs:
    """A seeded clip and prompt for the config, and the head selections of the two LoRAs (half the heads each)."""

    cfg: WanConfig
    height: int
    width: int
    latents: torch.Tensor
    text: object
    settings: dict  # steps, rank and checkpointing, shared by both stages

    def backbone(self, compiled: bool = False):
        """A random transformer with the spatial and motion LoRAs (added after compiling, as `Transfer` does)."""
        backbone = transformer_backbone(self.cfg, rope_max_seq_len=max(128, self.latents.shape[2]))
        if compiled:
            backbone.compile_blocks()
        selection = half_heads(self.cfg)
        other = {layer: [h for h in range(self.cfg.heads) if h not in heads] for layer, heads in selection.items()}
        add_lora(backbone, "spatial", selection, self.settings["rank"])
        add_lora(backbone, "motion", other, self.settings["rank"])
        return backbone

    def stage2(self, backbone) -> Callable[[], list[float]]:
        """Timed stage-2 steps: every frame an image, the spatial LoRA trained."""
        def run() -> list[float]:
            backbone.set_active_adapters({"spatial": 1.0})
            frames = self.latents[0].transpose(0, 1)[:, :, None]  # (F, C, 1, h, w)
            return train_steps(backbone, "spatial", SpatialSettings(**self.settings),
                               spatial_inputs(frames, self.text, 1))

        return run

    def stage3(self, backbone, keep: int, downsample: int = 1) -> Callable[[], list[float]]:
        """Timed stage-3 steps on `keep` of the clip's frames, the spatial LoRA frozen and on; with `downsample`
        s > 1 on latents area-averaged to 1/s of each side (`motion.downsample`)."""
        latents = torch.nn.functional.avg_pool3d(self.latents, (1, downsample, downsample))

        def run() -> list[float]:
            backbone.set_active_adapters({"spatial": 1.0, "motion": 1.0})
            settings = MotionSettings(**self.settings, keep_frames=keep, downsample=downsample)
            return train_steps(backbone, "motion", settings, motion_inputs(latents, self.text, settings),
                               motion_weight=1.0)

        return run


def stage_inputs(args: argparse.Namespace) -> StageInputs:
    cfg = small_config(args.layers, args.heads, args.head_dim)
    height, width = map(int, args.latent.split("x"))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, cfg.in_channels, args.frames, height, width, generator=generator)
    text = text_condition(torch.randn(1, args.text_length, cfg.text_dim, generator=generator))
    settings = {"steps": args.steps + 1, "rank": args.rank, "grad_checkpointing": args.checkpointing}
    return StageInputs(cfg, height, width, latents, text, settings)
