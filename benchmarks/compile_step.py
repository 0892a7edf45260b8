"""Seconds per optimizer step with the transformer blocks compiled (`model.compile`) against eager, side by side.

Two copies of one random Wan2.1-architecture transformer (same weights), one with `Backbone.compile_blocks`
(each block `torch.compile`d, as `Transfer` does with `model.compile: true`), each with the spatial and motion
head-masked LoRAs added after compiling. Both run the project's training loop (`train_adapter`) at stage 2's
shape (one frame) and stage 3's sparse shape (K of F frames, spatial LoRA frozen and on), in interleaved rounds
after one untimed warm-up round (where the compiled copy compiles; its seconds are recorded apart). The ratio is
the median over rounds of compiled / eager within a round.

    OMP_NUM_THREADS=1 python -m benchmarks.compile_step     # writes benchmarks/results/compile_step.{json,md}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from follow_your_motion.config import MotionSettings, SpatialSettings
from follow_your_motion.method.train import motion_inputs, spatial_inputs

from .common import (
    add_lora,
    half_heads,
    interleaved,
    markdown_table,
    one_thread,
    small_config,
    text_condition,
    train_steps,
    transformer_backbone,
    write_result,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=84, help="F latent frames of the clip")
    parser.add_argument("--keep", type=int, default=20, help="K latent frames of stage 3")
    parser.add_argument("--latent", default="12x16", help="latent height x width of a frame (patch 2x2)")
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per call (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (the Wan recipe)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_step"))
    args = parser.parse_args(argv)
    one_thread()

    cfg = small_config(args.layers, args.heads, args.head_dim)
    height, width = map(int, args.latent.split("x"))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, cfg.in_channels, args.frames, height, width, generator=generator)
    text = text_condition(torch.randn(1, args.text_length, cfg.text_dim, generator=generator))
    selection = half_heads(cfg)
    other = {layer: [h for h in range(cfg.heads) if h not in heads] for layer, heads in selection.items()}
    common = {"steps": args.steps + 1, "rank": args.rank, "grad_checkpointing": args.checkpointing}

    backbones = {}
    for kind in ("eager", "compiled"):
        backbone = transformer_backbone(cfg, rope_max_seq_len=max(128, args.frames))
        if kind == "compiled":
            backbone.compile_blocks()
        add_lora(backbone, "spatial", selection, args.rank)
        add_lora(backbone, "motion", other, args.rank)
        backbones[kind] = backbone

    def stage2(backbone):
        def run() -> list[float]:
            backbone.set_active_adapters({"spatial": 1.0})
            frames = latents[0].transpose(0, 1)[:, :, None]  # (F, C, 1, h, w): every frame an image
            return train_steps(backbone, "spatial", SpatialSettings(**common), spatial_inputs(frames, text, 1))

        return run

    def stage3(backbone):
        def run() -> list[float]:
            backbone.set_active_adapters({"spatial": 1.0, "motion": 1.0})
            settings = MotionSettings(**common, keep_frames=args.keep)
            return train_steps(backbone, "motion", settings, motion_inputs(latents, text, settings), motion_weight=1.0)

        return run

    variants = {f"{stage}, {kind}": make(backbone) for kind, backbone in backbones.items()
                for stage, make in (("stage 2", stage2), (f"stage 3, K={args.keep}", stage3))}
    warmup = {}
    for name, run in variants.items():  # the compiled copy compiles here (and recompiles for a new shape)
        began = time.perf_counter()
        run()
        warmup[name] = time.perf_counter() - began
    samples = interleaved(variants, args.repeats)

    results = []
    for stage in ("stage 2", f"stage 3, K={args.keep}"):
        for kind in ("eager", "compiled"):
            name = f"{stage}, {kind}"
            results.append({"variant": name, "seconds_per_step": samples.median(name), "samples": samples.pooled(name),
                            "warmup_seconds": warmup[name],
                            "vs_eager": samples.ratio(name, f"{stage}, eager")})
    tokens = {"stage 2": height * width // 4, f"stage 3, K={args.keep}": args.keep * height * width // 4}
    data = {"config": vars(args) | {"out": str(args.out)}, "model": vars(cfg), "tokens": tokens, "results": results}
    table = markdown_table(
        ["variant", "s / step (median)", "compiled / eager", "warm-up call s (4 steps, incl. compiling)"],
        [[r["variant"], f"{r['seconds_per_step']:.4f}", f"{r['vs_eager']:.3f}", f"{r['warmup_seconds']:.1f}"]
         for r in results])
    table += (f"\n\n{args.layers} layers of {args.heads} heads x {args.head_dim}, rank {args.rank}; stage 2: "
              f"{tokens['stage 2']} tokens, stage 3: {tokens[f'stage 3, K={args.keep}']} tokens; "
              f"{len(samples.pooled(results[0]['variant']))} timed steps per variant in {args.repeats} rounds.\n")
    write_result(args.out, data, table, "compile_step", argv)
    return data


if __name__ == "__main__":
    main()
