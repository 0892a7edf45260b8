"""What the head mask costs: head-masked LoRA vs plain PEFT LoRA vs no LoRA, forward + backward, same shapes.

Three copies of one random Wan2.1-architecture transformer (same weights): no adapter; a plain PEFT LoRA
(`add_adapter` with a `LoraConfig`) on q/k/v/o of every layer's self-attention; the method's head-masked LoRA
(`add_masked_lora`) on the same modules, masked to half the heads. Each does the project's stage-3 forward
(`backbone.predict` on `motion_inputs`, K kept frames with adaptive RoPE) and the backward of flow-matching +
motion loss; without an adapter the backward starts at the patch embedding's output, so that it passes
through the same layers. The two LoRAs also run whole optimizer steps through `train_adapter`. Variants are
interleaved in rounds; seconds are medians, ratios the median over rounds of the ratio within a round. The
mask can cost only its gradient hooks (an elementwise product on each LoRA weight's gradient); its FLOPs are
those of a full LoRA.

    OMP_NUM_THREADS=1 python -m benchmarks.lora_overhead
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig

from follow_your_motion.backbones.base import Backbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.method.lora import set_trainable
from follow_your_motion.method.losses import flow_matching_loss, motion_loss
from follow_your_motion.method.train import motion_inputs

from . import cost_model as cm
from .common import (
    add_lora,
    expert,
    half_heads,
    interleaved,
    lora_target_names,
    markdown_table,
    noisy,
    one_thread,
    predict,
    small_config,
    text_condition,
    timed,
    train_steps,
    transformer_backbone,
    write_result,
)


def add_plain_lora(backbone: Backbone, adapter: str, modules: list[str], rank: int) -> None:
    """A PEFT LoRA with no head mask, as any diffusers user would add one; float32 weights like the masked one."""
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=modules, init_lora_weights=True)
    transformer = expert(backbone).module
    transformer.add_adapter(config, adapter_name=adapter)
    for name, param in transformer.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()


def forward_backward(backbone: Backbone, adapter: str | None, batch, steps: int) -> list[float]:
    """Seconds of `steps` forward + backward passes (after one untimed pass) on a fixed noisy batch."""
    transformer = expert(backbone).module
    params = set_trainable(transformer, adapter)
    transformer.train()
    x, timesteps, target = noisy(backbone, batch.latents, 0.5, torch.Generator().manual_seed(0))

    def once() -> None:
        pred = predict(backbone, x, timesteps, batch.cond, batch.frame_positions)
        (flow_matching_loss(pred, target) + motion_loss(pred, target)).backward()
        for p in params:
            p.grad = None

    # With nothing to train, make the blocks' input a leaf that wants a gradient: the backward then runs
    # through every block, as with a LoRA, and stops short of the patch embedding, as with a LoRA.
    hook = transformer.patch_embedding.register_forward_hook(
        lambda module, args, out: out.detach().requires_grad_(True)) if adapter is None else None
    once()
    seconds = [timed(once) for _ in range(steps)]
    if hook is not None:
        hook.remove()
    transformer.eval()
    set_trainable(transformer, None)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--keep", default="5,21", help="kept latent frames per shape measured (comma-separated)")
    parser.add_argument("--latent", default="12x16", help="latent height x width of a frame (patch 2x2)")
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed passes per call")
    parser.add_argument("--repeats", type=int, default=8, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_overhead"))
    args = parser.parse_args(argv)
    one_thread()

    cfg = small_config(args.layers, args.heads, args.head_dim)
    none = transformer_backbone(cfg)
    plain, masked = copy.deepcopy(none), copy.deepcopy(none)
    selection = half_heads(cfg)
    add_lora(masked, "masked", selection, args.rank)
    add_plain_lora(plain, "plain", lora_target_names(masked, selection), args.rank)
    models = {"no LoRA": (none, None), "plain PEFT LoRA": (plain, "plain"), "head-masked LoRA": (masked, "masked")}

    height, width = map(int, args.latent.split("x"))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, cfg.in_channels, args.frames, height, width, generator=generator)
    text = text_condition(torch.randn(1, args.text_length, cfg.text_dim, generator=generator))
    rows, cols = height // cfg.patch[1], width // cfg.patch[2]
    results = []
    for keep in (int(k) for k in args.keep.split(",")):
        settings = MotionSettings(steps=args.steps + 1, keep_frames=keep, rank=args.rank)
        batch = motion_inputs(latents, text, settings)(0, generator)
        variants = {name: partial(forward_backward, m, a, batch, args.steps) for name, (m, a) in models.items()}
        for name in ("plain PEFT LoRA", "head-masked LoRA"):
            model, adapter = models[name]
            inputs = motion_inputs(latents, text, settings)
            variants[f"{name}, optimizer step"] = partial(train_steps, model, adapter, settings, inputs,
                                                          motion_weight=1.0)
        samples = interleaved(variants, args.repeats)
        shapes = cm.Shapes(keep, rows, cols, text_length=args.text_length, rank=args.rank)
        predicted = {"no LoRA": cm.train_flops(cfg, replace(shapes, rank=0), input_grad=True).total}
        predicted["plain PEFT LoRA"] = predicted["head-masked LoRA"] = cm.train_flops(cfg, shapes).total
        for name in variants:
            step = name.endswith("optimizer step")
            results.append({
                "keep_frames": keep, "tokens": shapes.tokens, "variant": name, "seconds": samples.median(name),
                "samples": samples.pooled(name),
                "over_plain": samples.ratio(name, "plain PEFT LoRA, optimizer step" if step else "plain PEFT LoRA"),
                "over_no_lora": None if step else samples.ratio(name, "no LoRA"),
                "predicted_gflop": None if step else predicted[name] / 1e9,
            })
    data = {"config": vars(args) | {"out": str(args.out)}, "model": vars(cfg), "results": results}
    table = markdown_table(
        ["tokens (K of F)", "variant", "s (median)", "vs plain PEFT", "vs no LoRA", "predicted GFLOP"],
        [[f"{r['tokens']} ({r['keep_frames']} of {args.frames})", r["variant"], f"{r['seconds']:.4f}",
          f"{r['over_plain']:.3f}", "-" if r["over_no_lora"] is None else f"{r['over_no_lora']:.3f}",
          "-" if r["predicted_gflop"] is None else f"{r['predicted_gflop']:.2f}"] for r in results])
    write_result(args.out, data, table, "lora_overhead", argv)
    return data


if __name__ == "__main__":
    main()
