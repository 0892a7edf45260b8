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

from .common import (
    interleaved,
    markdown_table,
    one_thread,
    write_result,
)
from .stage_runs import add_stage_arguments, stage_inputs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser, repeats=3)
    parser.add_argument("--keep", type=int, default=20, help="K latent frames of stage 3")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_step"))
    args = parser.parse_args(argv)
    one_thread()

    inputs = stage_inputs(args)
    cfg, height, width = inputs.cfg, inputs.height, inputs.width
    backbones = {kind: inputs.backbone(compiled=kind == "compiled") for kind in ("eager", "compiled")}

    def stage3(backbone):
        return inputs.stage3(backbone, args.keep)

    variants = {f"{stage}, {kind}": make(backbone) for kind, backbone in backbones.items()
                for stage, make in (("stage 2", inputs.stage2), (f"stage 3, K={args.keep}", stage3))}
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
