"""Which LoRA carries a leaked background: each tuned leakage case regenerated with the spatial and motion LoRAs
at scales (motion, spatial) = (1, 0) (fym's default), (0, 1), (1, 1) and (0, 0) (the base model), and scored
with `background_leak` against the exact rendered reference, as `fym bench` scores it.

It reads a finished `fym bench run` of the leakage suite (`benchmarks/suites/toy_leakage.yaml`) and samples
each (case, method) run directory's own LoRAs with its own generation settings (seed, steps, guidance), so the
(1, 0) column of fym reproduces the bench's number. Nothing is tuned.

    OMP_NUM_THREADS=1 python -m benchmarks.leak_sources runs/leakage --methods fym,two-stage-lora
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from follow_your_motion.bench.manifest import load_manifest
from follow_your_motion.toyworld import render as sw
from follow_your_motion.toyworld.leakage import background_leak
from follow_your_motion.transfer import Transfer

from .common import markdown_table, one_thread, write_result

SUITE = Path("benchmarks/suites/toy_leakage.yaml")
SCALES = ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0))  # (motion, spatial)


def case_leaks(job: Transfer, reference: np.ndarray, prompt: str) -> dict[str, float]:
    """`background_leak` of the run's target prompt sampled at each (motion, spatial) scale pair."""
    out = {}
    for motion, spatial in SCALES:
        settings = job.cfg.generate.model_copy(update={"motion_scale": motion, "spatial_scale": spatial})
        sample = job.generate(prompt, settings, name=f"leak-m{motion:g}-s{spatial:g}")
        out[f"motion {motion:g}, spatial {spatial:g}"] = background_leak(reference, sample.frames)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path, help="the bench run directory of the leakage suite")
    parser.add_argument("--suite", type=Path, default=SUITE)
    parser.add_argument("--methods", default="fym,two-stage-lora", help="methods with a spatial and a motion LoRA")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/leak_sources"))
    args = parser.parse_args(argv)
    one_thread()
    results = []
    for case in load_manifest(args.suite).cases:
        if case.shapesworld is None or case.shapesworld.background == "black":
            continue  # nothing in the background to leak
        for method in args.methods.split(","):
            job = Transfer.open(args.bench / "cases" / case.id / method)
            v = job.cfg.video
            scene = case.shapesworld.scene(v.frames, v.height, v.width)
            leaks = case_leaks(job, sw.render(scene).frames, case.targets[0])
            results.append({"case": case.id, "background": scene.background, "method": method, **leaks})
    kinds = [f"motion {m:g}, spatial {s:g}" for m, s in SCALES]
    table = markdown_table(["case", "background", "method", *kinds],
                           [[r["case"], r["background"], r["method"], *(f"{r[k]:.3f}" for k in kinds)]
                            for r in results])
    data = {"config": {k: str(v) for k, v in vars(args).items()}, "results": results}
    write_result(args.out, data, table + "\n", "leak_sources", argv)
    return data


if __name__ == "__main__":
    main()
