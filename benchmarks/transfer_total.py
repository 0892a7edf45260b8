"""Wall time of a whole motion transfer on the toy model, by stage, through the public Python API.

What `fym transfer` does, stage by stage: `Transfer(cfg, out)` (loads the model, reads the reference),
`reference()` (encodes the clip and the prompt), `classify()` (stage 1), `tune_spatial()` (stage 2),
`tune_motion()` (stage 3), `generate()`, with the toy recipe (`recipe_config("toy", ...)`) on a clip from
`examples/`, in a fresh run directory. The median optimizer step of stages 2 and 3 comes from the run's own log.

    OMP_NUM_THREADS=1 python -m benchmarks.transfer_total
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from follow_your_motion.recipes import recipe_config
from follow_your_motion.transfer import Transfer

from .common import markdown_table, median, one_thread, write_result


def step_seconds(log: Path, stage: str) -> list[float]:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return [e["seconds"] for e in events if e.get("event") == "step" and e.get("stage") == stage]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=Path("examples/single-orbit-cw.mp4"))
    parser.add_argument("--spatial-steps", type=int, default=None, help="override the recipe's stage-2 steps")
    parser.add_argument("--motion-steps", type=int, default=None, help="override the recipe's stage-3 steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer_total"))
    args = parser.parse_args(argv)
    one_thread()

    prompt = args.reference.with_suffix(".txt").read_text().strip()
    overrides: dict = {"reference": str(args.reference), "prompt": prompt}
    for section, steps in (("spatial", args.spatial_steps), ("motion", args.motion_steps)):
        if steps is not None:
            overrides[section] = {"steps": steps}
    cfg = recipe_config("toy", overrides)
    seconds: dict[str, float] = {}

    def stage(name: str, fn):
        began = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - began
        return value

    with TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        job = stage("load model + reference", lambda: Transfer(cfg, run))
        cfg = job.cfg  # with the frame count and size fitted to the clip
        stage("encode", job.reference)
        stage("stage 1: classify heads", job.classify)
        stage("stage 2: spatial LoRA", job.tune_spatial)
        stage("stage 3: motion LoRA", job.tune_motion)
        stage("generation", job.generate)
        steps = {"spatial": step_seconds(run / "log.jsonl", "spatial"),
                 "motion": step_seconds(run / "log.jsonl", "motion")}
    total = sum(seconds.values())
    counts = {"stage 2: spatial LoRA": cfg.spatial.steps, "stage 3: motion LoRA": cfg.motion.steps,
              "generation": cfg.generate.steps}
    per_step = {"stage 2: spatial LoRA": steps["spatial"], "stage 3: motion LoRA": steps["motion"]}
    data = {
        "config": vars(args) | {"out": str(args.out), "reference": str(args.reference)},
        "transfer": cfg.model_dump(mode="json"), "seconds": seconds, "total_seconds": total,
        "median_step_seconds": {k: median(v) for k, v in per_step.items() if v},
    }
    rows = [[name, counts.get(name, "-"), f"{value:.2f}", f"{value / total:.0%}",
             f"{median(per_step[name]):.4f}" if per_step.get(name) else "-"] for name, value in seconds.items()]
    rows.append(["total", "-", f"{total:.2f}", "100%", "-"])
    table = markdown_table(["stage", "steps", "seconds", "share", "median s / optimizer step"], rows)
    table += (f"\n\nToy recipe: {cfg.video.frames} frames of {cfg.video.height}x{cfg.video.width}, "
              f"K = {cfg.motion.keep_frames}, reference {args.reference.name}.\n")
    write_result(args.out, data, table, "transfer_total", argv)
    return data


if __name__ == "__main__":
    main()
