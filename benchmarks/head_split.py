"""How stage 1 splits a model's heads, against the rule's alpha and the capture noise level, and why.

The paper's rule calls a head temporal when Sim_s < alpha * Sim_t, with Sim the cosine of a head's attention rows
with a 0/1 template. The cosine of a row with a template of c ones is mass / (|row| sqrt(c)), so for a row that
spreads its mass evenly over the keys Sim_s / Sim_t = sqrt(c_s / c_t): the template sizes alone set the ratio of
a head with no structure. On a (F, H, W) token grid with radius 0, c_s = H W keys share the query's frame and
c_t = F - 1 keys its position in the other frames, so that ratio is sqrt(H W / (F - 1)): 2.83 on the toy model's
9 x 8 x 8 grid, 8.8 on Wan2.1's 21 x 30 x 52 at 480x832x81. This scores every head of a model on reference clips
(ShapesWorld scenes of the held-out motions for the toy; `--clips` for any model's videos) at several noise
levels, and prints the ratio's quantiles and how many heads each alpha calls temporal.

    OMP_NUM_THREADS=1 python -m benchmarks.head_split
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from follow_your_motion.backbones import load_backbone
from follow_your_motion.config import HeadSettings
from follow_your_motion.method.heads import classify_heads
from follow_your_motion.toyworld import render as sw
from follow_your_motion.toyworld.scenes import random_scene

from .common import markdown_table, one_thread, write_result

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def uniform_ratio(grid: tuple[int, int, int], radius: int = 0) -> float:
    """Sim_s / Sim_t of an attention row that is uniform over the keys: sqrt(spatial / temporal template size)."""
    frames, rows, cols = grid
    near = min(2 * radius + 1, rows) * min(2 * radius + 1, cols)  # the query's cell and its neighbours (interior)
    return math.sqrt(rows * cols / (near * (frames - 1)))


def toy_clips(backbone, count: int, seed: int) -> list[tuple[torch.Tensor, object]]:
    """`count` ShapesWorld scenes of held-out motions (single, multi and camera in turn), encoded with captions."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(count):
        clip = sw.render(random_scene(rng, ("single", "multi", "camera")[i % 3], sw.HELDOUT_PROGRAMS))
        video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1
        clips.append((backbone.encode_video(video), backbone.encode_prompt(clip.caption)))
    return clips


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6, help="ShapesWorld reference clips scored")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sigmas", default="0.3,0.5,0.7,0.9", help="capture noise levels (comma-separated)")
    parser.add_argument("--alphas", default="1.25,2,2.5,3", help="paper-rule alphas counted (comma-separated)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/head_split"))
    args = parser.parse_args(argv)
    one_thread()
    backbone = load_backbone(None)  # the embedded toy model
    expert = backbone.experts[0]
    clips = toy_clips(backbone, args.clips, args.seed)
    grid = backbone.token_grid(clips[0][0])
    heads = sum(site.heads for site in expert.sites)
    alphas = [float(a) for a in args.alphas.split(",")]
    results = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        ratios = np.stack([np.array(m.sim_s) / np.array(m.sim_t) for m in (
            classify_heads(backbone, expert, lat, cond, HeadSettings(sigma=sigma)) for lat, cond in clips)])
        results.append({
            "sigma": sigma, "ratio_quantiles": dict(zip(map(str, QUANTILES), np.quantile(ratios, QUANTILES).tolist(),
                                                        strict=True)),
            # mean over clips of the heads each alpha calls temporal (before `min_heads`)
            "temporal_heads": {str(a): float((ratios < a).sum(axis=(1, 2)).mean()) for a in alphas},
        })
    uniform = uniform_ratio(grid)
    rows = [[r["sigma"], *(f"{q:.2f}" for q in r["ratio_quantiles"].values()),
             *(f"{n:.1f}" for n in r["temporal_heads"].values())] for r in results]
    table = (f"Toy model, {heads} heads, token grid {grid}; a uniform attention row gives Sim_s / Sim_t = "
             f"{uniform:.2f}. Mean over {args.clips} clips of the heads each alpha calls temporal.\n\n"
             + markdown_table(["sigma", *(f"ratio q{q:g}" for q in QUANTILES), *(f"temporal at alpha {a:g}"
                                                                              for a in alphas)], rows) + "\n")
    data = {"model": "embedded toy", "heads": heads, "grid": list(grid), "uniform_ratio": uniform,
            "clips": args.clips, "seed": args.seed, "results": results}
    write_result(args.out, data, table, "head_split", argv)
    return data


if __name__ == "__main__":
    main()
