"""Seconds per optimizer step of stage 2 and stage 3, dense and sparse, against the cost model's prediction.

Runs the project's own training loop (`train_adapter` with head-masked LoRAs from `add_masked_lora`, inputs
from `spatial_inputs` / `motion_inputs`, flow-matching + motion loss, AdamW) on a random Wan2.1-architecture
transformer small enough for one CPU thread. Stage 3 trains the motion LoRA with the spatial LoRA frozen and
on, as `fym transfer` does. F = 84 latent frames lets K/F be exactly 1, 1/2, 1/4 and 5/21 (K = 84, 42, 21,
20). Variants run in interleaved rounds; each reports its median step, and a ratio is the median over rounds
of the ratio within a round. The cost model predicts each ratio to
the dense step from FLOPs alone; measured / predicted above 1 is time the FLOPs do not explain (fixed
per-step work, elementwise ops).

    OMP_NUM_THREADS=1 python -m benchmarks.stage_step
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from . import cost_model as cm
from .common import (
    interleaved,
    markdown_table,
    one_thread,
    write_result,
)
from .stage_runs import add_stage_arguments, stage_inputs


def fit_overhead(points: list[tuple[float, float]]) -> tuple[float, float | None]:
    """Least-squares seconds = fixed + flops / rate over (flops, seconds); returns (fixed s, GFLOP/s), the rate
    None where the seconds do not grow with the FLOPs (a model so small that fixed costs are all it measures)."""
    n = len(points)
    mx = sum(f for f, _ in points) / n
    my = sum(s for _, s in points) / n
    slope = sum((f - mx) * (s - my) for f, s in points) / sum((f - mx) ** 2 for f, _ in points)
    return my - slope * mx, (1 / slope / 1e9 if slope > 0 else None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, repeats=4)
    parser.add_argument("--keep", default="84,42,21,20", help="K values of stage 3 (comma-separated)")
    parser.add_argument("--downsample", type=int, default=2,
                        help="also stage 3 at the last K on latents shrunk this many times (motion.downsample; 1: not)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stage_step"))
    args = parser.parse_args(argv)
    one_thread()

    inputs = stage_inputs(args)
    cfg, height, width = inputs.cfg, inputs.height, inputs.width
    backbone = inputs.backbone()
    keeps = [int(k) for k in args.keep.split(",")]
    dense_keep = args.frames
    variants = {"stage 2": inputs.stage2(backbone)} | {f"stage 3, K={k}": inputs.stage3(backbone, k) for k in keeps}
    rows_tokens, cols_tokens = height // cfg.patch[1], width // cfg.patch[2]
    base = cm.Shapes(args.frames, rows_tokens, cols_tokens, text_length=args.text_length, rank=args.rank)
    shapes = {"stage 2": replace(base, frames=1)} | {
        f"stage 3, K={k}": replace(base, frames=k, frozen_rank=args.rank) for k in keeps}
    s = args.downsample
    if s > 1:
        shrunk = f"stage 3, K={keeps[-1]}, 1/{s} size"
        variants[shrunk] = inputs.stage3(backbone, keeps[-1], s)
        shapes[shrunk] = replace(shapes[f"stage 3, K={keeps[-1]}"], rows=rows_tokens // s, cols=cols_tokens // s)
    samples = interleaved(variants, args.repeats)

    dense_name = f"stage 3, K={dense_keep}"
    results = []
    for name, s in shapes.items():
        flops = cm.train_flops(cfg, s, args.checkpointing)
        results.append({
            "variant": name, "frames": s.frames, "tokens": s.tokens, "gflop": flops.total / 1e9,
            "seconds_per_step": samples.median(name), "samples": samples.pooled(name),
            "predicted_activation_mib": cm.activation_bytes(cfg, s, args.checkpointing, "fp32") / 2**20,
        })
    dense = next((r for r in results if r["variant"] == dense_name), None)
    for r in results:
        if dense is not None:
            r["measured_ratio"] = samples.ratio(r["variant"], dense_name)
            r["predicted_ratio"] = r["gflop"] / dense["gflop"]
            r["measured_over_predicted"] = r["measured_ratio"] / r["predicted_ratio"]
    fixed, rate = fit_overhead([(r["gflop"] * 1e9, r["seconds_per_step"]) for r in results if r["frames"] > 1])
    data = {"config": vars(args) | {"out": str(args.out)}, "model": vars(cfg), "results": results,
            "fit": {"fixed_seconds": fixed, "gflops": rate}}
    table = markdown_table(
        ["variant", "frames", "tokens", "GFLOP / step", "s / step (median)", "measured / dense", "predicted / dense",
         "measured / predicted",
         "predicted activations MiB"],
        [[r["variant"], f"{r['frames']} of {args.frames}", r["tokens"], f"{r['gflop']:.2f}",
          f"{r['seconds_per_step']:.3f}", f"{r.get('measured_ratio', float('nan')):.3f}",
          f"{r.get('predicted_ratio', float('nan')):.3f}", f"{r.get('measured_over_predicted', float('nan')):.2f}",
          f"{r['predicted_activation_mib']:.0f}"] for r in results])
    fit = f"{fixed:.3f} + GFLOP / {rate:.1f}" if rate is not None else f"{fixed:.3f} (no FLOP-proportional part)"
    table += (f"\n\nStage-3 fit: seconds = {fit} "
              f"({len(samples.pooled(dense_name))} timed steps per variant in {args.repeats} rounds; ratios: median "
              "over rounds of the ratio within a round).\n")
    write_result(args.out, data, table, "stage_step", argv)
    return data


if __name__ == "__main__":
    main()
