"""A benchmark run with a fake transfer, for tests/test_bench_runner.py (in-process and under torchrun).

    python -m torch.distributed.run --standalone --nproc_per_node 2 bench_shard.py OUT_DIR

runs `SHARD_METHODS` over `shard_manifest()` into OUT_DIR with `FakeTransfer` in place of the expensive
transfer call; every call appends "<pid> <rank> <item>" to OUT_DIR/calls/<pid>.txt, every fake tuning "<pid>
<rank> <run>" to OUT_DIR/trained/<pid>.txt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from follow_your_motion.bench import runner
from follow_your_motion.bench.manifest import Manifest, validate_manifest
from follow_your_motion.bench.result_metrics import colours_in
from follow_your_motion.bench.transfer_call import STAGE_STATS, Generated
from follow_your_motion.toyworld.render import COLOURS, segment_colour
from follow_your_motion.video import load_reference, write_video

SHARD_METHODS = ("fym", "base", "fym+flow-guidance")  # the last reuses fym's tuning


def shapes_case(case_id: str, colour: str, shape: str, program: str, targets: list[str], **scene) -> dict:
    """A ShapesWorld case at the toy size (9 frames of 32x32)."""
    spec = {"objects": [{"shape": shape, "colour": colour, "program": program}], "num_frames": 9, "height": 32,
            "width": 32, **scene}
    return {"id": case_id, "category": "single-object", "reference": {"shapesworld": spec},
            "caption": f"a {colour} {shape}", "targets": targets}


def shard_manifest() -> Manifest:
    cases = [
        shapes_case("orbit", "red", "circle", "orbit-cw", ["a blue square"]),
        shapes_case("zigzag", "green", "square", "zigzag", ["a yellow triangle"]),
    ]
    return validate_manifest({"name": "shard-test", "cases": cases}, "shard_manifest()")


def recolour(frames: np.ndarray, source: str, target: str) -> np.ndarray:
    """The reference with one colour's pixels painted another colour: a result that moves exactly like it."""
    out = frames.copy()
    src, dst = colours_in(source), colours_in(target)
    for a, b in zip(src, dst, strict=False):
        out[segment_colour(frames, a)] = COLOURS[b]
    return out


class FakeTransfer:
    """Stands in for runner.run_transfer: deterministic result, call log, optional interrupt on call n."""

    def __init__(self, interrupt_at: int | None = None, log_dir: Path | None = None, rank: str = "-") -> None:
        self.calls: list[str] = []
        self.trained: list[str] = []  # the runs it tuned: a tuned method's, on its first call
        self.interrupt_at = interrupt_at
        self.log_dir = log_dir
        self.rank = rank  # the launcher's RANK (hidden from the environment while items run)

    def __call__(self, cfg, run_dir: Path, tune: bool, prompt: str, seed: int, name: str) -> Generated:
        item = f"{Path(run_dir).parent.name}__{Path(run_dir).name}__{name}"
        self.calls.append(item)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{os.getpid()} {self.rank} {item}\n")
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if tune and not (Path(run_dir) / STAGE_STATS).exists():
            self._tune(Path(run_dir))
        clip = load_reference(cfg.reference, *cfg.video.target())
        moving = clip.frames if tune else np.repeat(clip.frames[:1], len(clip.frames), axis=0)  # base: static
        frames = recolour(moving, cfg.prompt, prompt)
        video = write_video(Path(run_dir) / "samples" / f"{name}.mp4", frames, clip.fps)
        timings = {"classify": 1.0, "spatial": 2.0, "motion": 3.0} if tune else {}
        return Generated(frames=frames, reference=clip.frames, fps=clip.fps, paths={"video": video},
                         timings=timings | {"generate": 0.5})

    def _tune(self, run_dir: Path) -> None:
        """The files a finished tuning leaves (what ``bench.reuse`` links into a run that reuses it)."""
        item = f"{run_dir.parent.name}__{run_dir.name}"
        self.trained.append(item)
        if self.log_dir is not None:
            (self.log_dir.parent / "trained").mkdir(parents=True, exist_ok=True)
            with open(self.log_dir.parent / "trained" / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{os.getpid()} {self.rank} {item}\n")
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("heads.json", "spatial_lora.safetensors", "motion_lora.safetensors"):
            (run_dir / name).write_text("{}")
        stats = {stage: {"seconds": s} for stage, s in (("classify", 1.0), ("spatial", 2.0), ("motion", 3.0))}
        (run_dir / STAGE_STATS).write_text(json.dumps(stats))


def main(out: Path) -> None:
    runner.run_transfer = FakeTransfer(log_dir=out / "calls", rank=os.environ.get("RANK", "-"))
    runner.run_suite(shard_manifest(), list(SHARD_METHODS), out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
