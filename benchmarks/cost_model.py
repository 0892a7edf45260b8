"""Cost model of a Wan transformer step: FLOPs split into linear layers, attention and LoRA, and activation memory.

Why a model: the method's speed claims (sparse motion sampling, head-masked LoRA) are ratios of work, and a
GPU is not always at hand. The model predicts those ratios for any Wan size from the published configs, and the
CPU benchmarks check the prediction against measured step times on small random models.

What is counted, and what a step's backward and stage 1 cost: `follow_your_motion.cost` (the FLOPs; `fym` uses
them too). Activation memory is what autograd saves per block (`ACTIVATION_BYTES`), or with checkpointing each
block's input plus one block recomputed.

    python -m benchmarks.cost_model --tflops 400     # the three published models at their recipe sizes
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from pathlib import Path

from follow_your_motion.cost import (
    MODELS,
    Flops,
    Shapes,
    WanConfig,
    classify_flops,
    forward_flops,
    train_flops,
)


@dataclass(frozen=True)
class Recipe:
    """A model's tuning recipe: clip size, kept frames, LoRA rank, step counts (paper: 3,000 + 2,000)."""

    frames: int = 81
    height: int = 480
    width: int = 832
    keep: int = 5  # latent frames per stage-3 step (paper: 17 of 81 pixel frames = 5 of 21 latent frames)
    rank: int = 128
    text_length: int = 512
    spatial_steps: int = 3000
    motion_steps: int = 2000
    generate_steps: int = 50
    guidance: bool = True  # classifier-free guidance: two forwards per generation step


# The project's recipes (`follow_your_motion.recipes.RECIPES`, checked in the tests): Wan2.1 at the paper's sizes;
# Wan2.2-TI2V-5B at its release's 121 frames of 704x1280 (31 latent frames), keeping the Wan recipe's K = 5.
RECIPES: dict[str, Recipe] = {
    "wan2.1-1.3b": Recipe(),
    "wan2.1-14b": Recipe(),
    "wan2.2-ti2v-5b": Recipe(frames=121, height=704, width=1280),
}
VARIANT_RECIPES = {"wan2.1-1.3b": "wan", "wan2.1-14b": "wan", "wan2.2-ti2v-5b": "wan2.2-ti2v-5b"}


def parameter_count(cfg: WanConfig) -> int:
    """Parameters of the transformer (checked against `WanTransformer3DModel` in the tests)."""
    d, f, out = cfg.dim, cfg.ffn_dim, cfg.out_channels * math.prod(cfg.patch)
    embed = cfg.in_channels * math.prod(cfg.patch) * d + d
    embed += cfg.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d + cfg.text_dim * d + d + d * d + d
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, o with biases; RMS norms of q and k
    block = 2 * attention + 2 * d + (d * f + f + f * d + d) + 6 * d  # self, cross, norm2, FFN, modulation
    return embed + cfg.layers * block + d * out + out + 2 * d


def lora_parameter_count(cfg: WanConfig, rank: int, lora_out: bool = True) -> int:
    return cfg.layers * (4 if lora_out else 3) * 2 * cfg.dim * rank


# Bytes autograd keeps per block for the backward, measured with torch.autograd.graph.saved_tensors_hooks on
# diffusers 0.42 (tests/test_benchmarks.py re-measures them): per token 13 (S, D) tensors (the three norms'
# inputs, the LoRA's input, q/k before their RMS norm and after RoPE, v, the attention output, cross-attention
# q before/after its norm and its output), Wan's nine norm statistics, two softmax log-sum-exps per head, the
# GELU input (S, F) and each LoRA's x A^T; per text token the cross-attention k and v. Under bf16 autocast most
# of the (S, D) tensors stay float32 (Wan's norms run in float32): 44 bytes per channel instead of 13 x 2.
ACTIVATION_BYTES = {
    # dtype: (per token per channel, per token per head, per token per LoRA rank and module, per token per FFN
    #         channel, per token, per text token per channel, per LoRA module per channel per rank, per channel)
    "bf16": (44, 8, 2, 2, 36, 4, 4, 32),
    "fp32": (52, 8, 4, 4, 36, 8, 0, 32),
}


def block_activation_bytes(cfg: WanConfig, s: Shapes, dtype: str = "bf16") -> int:
    """Bytes saved for the backward by one block (not the first) while training a LoRA of rank `s.rank`."""
    per_d, per_h, per_r, per_f, per_token, per_text, weights, per_dim = ACTIVATION_BYTES[dtype]
    d, m = cfg.dim, s.lora_modules
    token = per_d * d + per_h * cfg.heads + per_r * m * s.rank + per_f * cfg.ffn_dim + per_token
    return s.batch * (s.tokens * token + per_text * s.text_length * d) + weights * m * d * s.rank + per_dim * d


def activation_bytes(cfg: WanConfig, s: Shapes, checkpointing: bool, dtype: str = "bf16") -> int:
    """Activation memory of a training step: every block's saved tensors, or with gradient checkpointing each
    block's input plus one block recomputed during the backward; plus the RoPE tables (float64) they share."""
    block = block_activation_bytes(cfg, s, dtype)
    hidden = s.batch * s.tokens * cfg.dim * (2 if dtype == "bf16" else 4)
    rope = 2 * s.tokens * cfg.head_dim * 8
    return (cfg.layers * hidden + block if checkpointing else cfg.layers * block) + rope


@dataclass
class StagePrediction:
    """One stage at a recipe size: its per-step FLOPs, how many steps the recipe runs, its activations."""

    name: str
    shapes: Shapes
    flops: Flops
    steps: int
    activation_bytes: int = 0
    activation_bytes_checkpointed: int = 0


SHRINK = 2  # `motion.downsample` of the stage-3 variant on a shrunk clip


def recipe_stages(cfg: WanConfig, recipe: Recipe, checkpointing: bool = True,
                  queries: int = 1024) -> list[StagePrediction]:
    """Stage 1, stage 2 (one frame), stage 3 dense, sparse, and sparse on the clip shrunk SHRINK times (spatial
    LoRA frozen and on), a generation step."""
    frames, rows, cols = cfg.token_grid(recipe.frames, recipe.height, recipe.width)
    base = Shapes(frames, rows, cols, text_length=recipe.text_length, rank=recipe.rank)
    out = [StagePrediction("stage 1 (classify)", base, classify_flops(cfg, replace(base, rank=0), queries), 1)]
    sparse = replace(base, frames=recipe.keep, frozen_rank=recipe.rank)
    if rows % SHRINK or cols % SHRINK:
        raise ValueError(f"{cfg.name}: a {rows}x{cols} token grid cannot be shrunk {SHRINK} times")
    stages = {
        "stage 2 (1 frame)": (replace(base, frames=1), recipe.spatial_steps),
        f"stage 3 dense ({frames} frames)": (replace(base, frozen_rank=recipe.rank), recipe.motion_steps),
        f"stage 3 sparse ({recipe.keep} of {frames})": (sparse, recipe.motion_steps),
        f"stage 3 sparse ({recipe.keep} of {frames}), 1/{SHRINK} size": (
            replace(sparse, rows=rows // SHRINK, cols=cols // SHRINK), recipe.motion_steps),
    }
    for name, (shapes, steps) in stages.items():
        out.append(StagePrediction(name, shapes, train_flops(cfg, shapes, checkpointing), steps,
                                   activation_bytes(cfg, shapes, False), activation_bytes(cfg, shapes, True)))
    gen = replace(base, rank=0, per_token_timesteps=cfg.in_channels == 48)
    passes = 2 if recipe.guidance else 1
    out.append(StagePrediction("generation step", gen, forward_flops(cfg, gen).times(passes), recipe.generate_steps))
    return out


def sparse_dense_ratio(cfg: WanConfig, dense: Shapes, keep: int, checkpointing: bool = False) -> float:
    """Predicted time of a sparse training step (K kept frames) relative to the dense one."""
    return train_flops(cfg, replace(dense, frames=keep), checkpointing).total / train_flops(
        cfg, dense, checkpointing).total


def predictions(tflops: float, checkpointing: bool = True) -> dict:
    """The cost model at each published model's recipe size, as JSON."""
    models = {}
    for key, cfg in MODELS.items():
        recipe = RECIPES[key]
        stages = recipe_stages(cfg, recipe, checkpointing)
        rows = []
        for stage in stages:
            seconds = stage.flops.total / (tflops * 1e12)
            flops = stage.flops
            rows.append({
                "stage": stage.name, "tokens": stage.shapes.tokens, "tflop": flops.total / 1e12,
                "linear": flops.linear / flops.total, "attention": flops.attention / flops.total,
                "lora": flops.lora / flops.total, "seconds_per_step": seconds, "steps": stage.steps,
                "activation_gib": stage.activation_bytes / 2**30,
                "activation_gib_checkpointed": stage.activation_bytes_checkpointed / 2**30,
            })
        dense, sparse, shrunk = (stage.flops.total for stage in stages[2:5])
        seconds = [row["seconds_per_step"] * row["steps"] for row in rows]
        common = seconds[0] + seconds[1] + seconds[5]  # stage 1, stage 2, generation
        models[key] = {
            "name": cfg.name, "config": {k: v for k, v in vars(cfg).items() if k != "name"}, "recipe": vars(recipe),
            "parameters": parameter_count(cfg), "lora_parameters": lora_parameter_count(cfg, recipe.rank),
            "stages": rows, "sparse_dense_ratio": sparse / dense, "shrunk_dense_ratio": shrunk / dense,
            "sparse_dense_ratio_no_checkpointing": sparse_dense_ratio(cfg, stages[2].shapes, recipe.keep, False),
            # stages 1-3 and generation at the recipe's step counts, stage 3 dense, sparse or sparse and shrunk
            "projected_transfer_seconds": {
                kind: common + seconds[index] for kind, index in (("dense", 2), ("sparse", 3), ("shrunk", 4))
            },
        }
    return {"tflops": tflops, "gradient_checkpointing": checkpointing, "models": models}


def markdown(result: dict) -> str:
    """Two tables: per stage of every model, and per model the sparse/dense ratio and projected tuning time."""
    from .common import markdown_table

    rows = []
    for m in result["models"].values():
        for r in m["stages"]:
            memory = (f"{r['activation_gib']:.1f} / {r['activation_gib_checkpointed']:.1f}"
                      if r["activation_gib"] else "-")
            rows.append([m["name"], r["stage"], f"{r['tokens']:,}", f"{r['tflop']:.1f}",
                         f"{r['linear']:.0%} / {r['attention']:.0%} / {r['lora']:.1%}", f"{r['seconds_per_step']:.2f}",
                         memory])
    stage_table = markdown_table(
        ["model", "stage", "tokens", "TFLOP / step", "linear / attention / LoRA", "s / step",
         "activations GiB (plain / checkpointed)"], rows)
    summary = markdown_table(
        ["model", "parameters", "LoRA parameters (r = 128)", "sparse / dense step", "(no checkpointing)",
         f"sparse at 1/{SHRINK} size / dense", "whole transfer, transformer only (s): sparse stage 3",
         "dense stage 3", f"sparse at 1/{SHRINK} size"],
        [[m["name"], f"{m['parameters'] / 1e9:.2f} B", f"{m['lora_parameters'] / 1e6:.0f} M",
          f"{m['sparse_dense_ratio']:.3f}", f"{m['sparse_dense_ratio_no_checkpointing']:.3f}",
          f"{m['shrunk_dense_ratio']:.3f}"]
         + [f"{m['projected_transfer_seconds'][kind]:,.0f}" for kind in ("sparse", "dense", "shrunk")]
         for m in result["models"].values()])
    check = "on" if result["gradient_checkpointing"] else "off"
    return (f"At {result['tflops']:g} TFLOP/s achieved, bf16, gradient checkpointing {check} for training steps.\n\n"
            f"{stage_table}\n\n{summary}\n")


def main(argv: list[str] | None = None) -> dict:
    from .common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=400.0, help="achieved TFLOP/s of the device (bf16)")
    parser.add_argument("--no-checkpointing", action="store_true", help="training steps without recomputation")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cost_model"))
    args = parser.parse_args(argv)
    result = predictions(args.tflops, not args.no_checkpointing)
    write_result(args.out, result, markdown(result), "cost_model", argv)
    return result


if __name__ == "__main__":
    main()
