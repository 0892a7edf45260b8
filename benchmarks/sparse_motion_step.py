"""Stage-3 step time and peak memory: sparse motion sampling (K of F latent frames) vs dense, side by side.

Runs the real training step (`train_adapter` with a head-masked motion LoRA) on a randomly initialised
Wan-architecture transformer, at a size that fits a CPU: F=21 latent frames (Wan's 81 pixel frames) of
16x16 latent cells, patch 2x2 -> 21 x 64 tokens dense, 5 x 64 sparse. Writes JSON + a markdown table.

    python benchmarks/sparse_motion_step.py --out benchmarks/results/sparse_motion_step
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from diffusers import WanTransformer3DModel

from follow_your_motion.backbones.toy import ToyBackbone, ToyTextEncoder
from follow_your_motion.config import MotionSettings
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir


def build(layers: int, heads: int, head_dim: int, channels: int) -> ToyBackbone:
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=channels,
        out_channels=channels, text_dim=64, freq_dim=64, ffn_dim=4 * heads * head_dim, num_layers=layers,
        rope_max_seq_len=64,
    )
    return ToyBackbone(transformer, ToyTextEncoder(["a", "tiger"], dim=64), {"shift": 3.0})


def measure(keep: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build(args.layers, args.heads, args.head_dim, args.channels)
    latents = torch.randn(1, args.channels, args.frames, args.size, args.size)
    text = model.encode_prompt("a tiger")
    selection = {layer: list(range(args.heads // 2)) for layer in range(args.layers)}
    add_masked_lora(model, "motion", selection, rank=16, alpha=16)
    settings = MotionSettings(steps=args.warmup + args.steps, keep_frames=keep, rank=16,
                              checkpoint_every=10**6)
    with TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp))
        train_adapter(model, run, "motion", "motion", settings, motion_inputs(latents, text, settings),
                      motion_weight=1.0)
        seconds = [json.loads(line)["seconds"] for line in (Path(tmp) / "log.jsonl").read_text().splitlines()
                   if '"step"' in line][args.warmup:]
    tokens = keep * (args.size // 2) ** 2
    return {"keep_frames": keep, "tokens": tokens, "seconds_per_step": sum(seconds) / len(seconds),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sparse_motion_step"))
    args = parser.parse_args()
    sparse = measure(args.keep, args)  # sparse first: ru_maxrss only grows, so its peak is not inflated
    dense = measure(args.frames, args)
    ratio = dense["seconds_per_step"] / sparse["seconds_per_step"]
    result = {"config": vars(args) | {"out": str(args.out)}, "sparse": sparse, "dense": dense,
              "speedup": ratio, "torch_threads": torch.get_num_threads(), "device": "cpu"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    table = (
        "| frames trained | tokens | s / step | peak RSS (MiB) |\n|---|---|---|---|\n"
        + "".join(f"| {r['keep_frames']} of {args.frames} | {r['tokens']} | {r['seconds_per_step']:.3f} | "
                  f"{r['peak_rss_mib']:.0f} |\n" for r in (dense, sparse))
        + f"\nspeed-up of sparse over dense: {ratio:.2f}x\n"
    )
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
