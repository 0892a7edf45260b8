"""Where a toy pretraining step's time goes on the CPU: rendering its batch against the model's update.

Renders batches with `toyworld.pretrain.batch` (the straight-line programs alone, and with a share of random
prior paths, whose exclusion test against the evaluation paths costs more than the drawing), and times the
model's part of a step (loss, backward, clipping, AdamW) on the shipped model's size, one torch thread. If
rendering were a large share, a CPU run would render ahead (`--workers`) or more cheaply.

    OMP_NUM_THREADS=1 python -m benchmarks.pretrain_step
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.toyworld.exclusion import evaluation_paths
from follow_your_motion.toyworld.pretrain import DEFAULT_META, PretrainSettings, batch, flow_loss, trainable

from .common import markdown_table, one_thread, write_result


def time_render(settings: PretrainSettings, steps: int) -> list[float]:
    out = []
    for step in range(steps):
        tick = time.perf_counter()
        batch(step, settings.batch_size, DEFAULT_META, settings)
        out.append(time.perf_counter() - tick)
    return out


def time_model(settings: PretrainSettings, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = ToyBackbone.build(DEFAULT_META)
    params = trainable(model)
    optimizer = torch.optim.AdamW(params, lr=settings.lr)
    clips, captions = batch(0, settings.batch_size, DEFAULT_META, settings)
    out = []
    for step in range(steps + 1):  # the first step warms up and is not counted
        tick = time.perf_counter()
        loss = flow_loss(model, clips, captions, torch.Generator().manual_seed(step), settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        out.append(time.perf_counter() - tick)
    return out[1:]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--render-steps", type=int, default=20)
    parser.add_argument("--model-steps", type=int, default=5)
    parser.add_argument("--free-paths", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrain_step"))
    args = parser.parse_args(argv)
    one_thread()
    tick = time.perf_counter()
    evaluation_paths(DEFAULT_META["video"]["frames"])
    bank_seconds = time.perf_counter() - tick
    plain = PretrainSettings(batch_size=args.batch_size, anchor_spread=0.2)
    prior = PretrainSettings(batch_size=args.batch_size, anchor_spread=0.2, free_paths=args.free_paths)
    render_plain = statistics.median(time_render(plain, args.render_steps))
    render_prior = statistics.median(time_render(prior, args.render_steps))
    model = statistics.median(time_model(prior, args.model_steps))
    rows = [["render, straight-line programs only", f"{render_plain:.3f}", f"{render_plain / model:.1%}"],
            [f"render, free paths {args.free_paths:g}", f"{render_prior:.3f}", f"{render_prior / model:.1%}"],
            ["model: loss, backward, AdamW", f"{model:.3f}", "100%"]]
    table = (f"Toy pretraining step at batch {args.batch_size}, one torch thread (medians of {args.render_steps} "
             f"batches and {args.model_steps} model steps); the evaluation-path bank took {bank_seconds:.1f} s to "
             "build, once per process.\n\n" + markdown_table(["part", "seconds", "of the model's time"], rows) + "\n")
    data = {"batch_size": args.batch_size, "free_paths": args.free_paths, "render_plain_s": render_plain,
            "render_prior_s": render_prior, "model_s": model, "bank_s": bank_seconds}
    write_result(args.out, data, table, "pretrain_step", argv)
    return data


if __name__ == "__main__":
    main()
