"""Stage 1 (head classification) peak memory and time against the number of sampled queries and of tokens.

`classify_heads` scores each head on sampled query rows against all keys, so its memory should grow with
n_query x tokens, never with tokens^2 (one head's full map at Wan2.1's 32,760 tokens is 4.3 GB). This runs the
project's `classify_heads` on a random Wan2.1-architecture transformer over a grid of (tokens, queries), and a
plain no-grad forward at each token count. The scoring memory is the classification peak minus the forward's;
its bytes per (query x token) staying flat across the grid is the linear growth, and the last column is what a
materialised S x S map of one head would take. Peaks are resident-set high-water marks with glibc made to
return freed blocks (`common.return_freed_memory`).

    OMP_NUM_THREADS=1 python -m benchmarks.classify_memory
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from follow_your_motion.config import HeadSettings

from . import cost_model as cm
from .common import (
    classify,
    markdown_table,
    one_thread,
    peak_memory,
    predict,
    return_freed_memory,
    small_config,
    text_condition,
    transformer_backbone,
    write_result,
)


def fit_peak(results: list[dict]) -> dict[str, float]:
    """Least squares peak bytes = a S + b n S + c S^2 over the grid: a linear-in-(n x S) stage has c ~ 0."""
    import numpy as np

    s = np.array([r["tokens"] for r in results], dtype=float)
    n = np.array([r["queries"] for r in results], dtype=float)
    y = np.array([r["peak_mib"] * 2**20 for r in results])
    (a, b, c), *_ = np.linalg.lstsq(np.stack([s, n * s, s * s], axis=1), y, rcond=None)
    fitted = a * s + b * n * s + c * s * s
    return {"bytes_per_token": float(a), "bytes_per_query_token": float(b), "bytes_per_token_squared": float(c),
            "max_relative_residual": float(np.max(np.abs(fitted - y) / y)),
            "largest_tokens_squared_share": float(c * s.max() ** 2 / y[s.argmax()])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--frames", default="4,8,16,32,64", help="latent frames (comma-separated): the token counts")
    parser.add_argument("--latent", default="32x32", help="latent height x width of a frame (patch 2x2)")
    parser.add_argument("--queries", default="128,512,2048", help="sampled query counts (comma-separated)")
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/classify_memory"))
    args = parser.parse_args(argv)
    one_thread()
    return_freed_memory()

    cfg = small_config(args.layers, args.heads, args.head_dim)
    frames_list = [int(f) for f in args.frames.split(",")]
    backbone = transformer_backbone(cfg, rope_max_seq_len=max(128, *frames_list))
    height, width = map(int, args.latent.split("x"))
    rows, cols = height // cfg.patch[1], width // cfg.patch[2]
    generator = torch.Generator().manual_seed(0)
    text = text_condition(torch.randn(1, args.text_length, cfg.text_dim, generator=generator))
    results = []
    for frames in frames_list:
        latents = torch.randn(1, cfg.in_channels, frames, height, width, generator=generator)
        tokens = frames * rows * cols
        with torch.no_grad(), peak_memory() as forward_peak:
            began = time.perf_counter()
            predict(backbone, latents, torch.full((1,), 900.0), text)
            forward_seconds = time.perf_counter() - began
        for queries in (int(q) for q in args.queries.split(",")):
            if queries > tokens:
                continue
            settings = HeadSettings(num_queries=queries)
            with peak_memory() as peak:
                began = time.perf_counter()
                classify(backbone, latents, text, settings)
                seconds = time.perf_counter() - began
            scoring = peak.mib - forward_peak.mib
            shapes = cm.Shapes(frames, rows, cols, text_length=args.text_length)
            results.append({
                "tokens": tokens, "queries": queries, "seconds": seconds, "forward_seconds": forward_seconds,
                "peak_mib": peak.mib, "forward_peak_mib": forward_peak.mib, "scoring_mib": scoring,
                "bytes_per_query_token": scoring * 2**20 / (queries * tokens),
                "full_map_mib": 4 * tokens**2 / 2**20,
                "predicted_gflop": cm.classify_flops(cfg, shapes, queries).total / 1e9,
            })
    fit = fit_peak(results)
    data = {"config": vars(args) | {"out": str(args.out)}, "model": vars(cfg), "results": results, "fit": fit}
    table = markdown_table(
        ["tokens", "queries", "stage 1 s", "forward s", "stage 1 peak MiB", "forward peak MiB", "scoring MiB",
         "bytes / (query x token)", "one full S x S map MiB"],
        [[r["tokens"], r["queries"], f"{r['seconds']:.2f}", f"{r['forward_seconds']:.2f}", f"{r['peak_mib']:.0f}",
          f"{r['forward_peak_mib']:.0f}", f"{r['scoring_mib']:.0f}", f"{r['bytes_per_query_token']:.1f}",
          f"{r['full_map_mib']:.0f}"] for r in results])
    table += (f"\n\nLeast squares over the grid: stage 1 peak = {fit['bytes_per_token'] / 1024:.2f} KiB x tokens + "
              f"{fit['bytes_per_query_token']:.1f} B x queries x tokens + {fit['bytes_per_token_squared']:.2e} B x "
              f"tokens^2 (largest relative residual {fit['max_relative_residual']:.0%}; the tokens^2 term is "
              f"{fit['largest_tokens_squared_share']:.1%} of the peak at the largest size).\n")
    write_result(args.out, data, table, "classify_memory", argv)
    return data


if __name__ == "__main__":
    main()
