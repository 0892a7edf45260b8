"""The robustness set of issue 14 on disk: its clips as mp4, their exact tracks, and a suite ``fym bench run`` takes.

``python -m follow_your_motion.bench.robustness_suite OUT [--count 24] [--seed 2026]`` writes::

    OUT/robustness.yaml        the suite: one single-object video case per clip (relative paths)
    OUT/clips/<id>.mp4         the clip (toyworld.robustness), at its own size, length and frame rate
    OUT/clips/<id>.npz         its exact track, as a tracks file: points (1, T, 2), (x, y) pixels of the clip

Each case's caption names the clip's colour and shape ("a red circle"), its one target another colour and
another shape; its ``object_rgb`` is the shade drawn, which is what the runner scores it by
(``bench.shade_truth``); its tags are ``kind:<kind>``, ``res:<H>x<W>``, ``frames:<T>``, ``fps:<fps>``. The exact
tracks are not the case's ``tracks``: those must be measured at the size and frame count a run fits the clip
to, which the set does not know.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..runs import atomic_write
from ..toyworld.robustness import DEFAULT_SEED, KINDS, RobustClip, make_set
from ..video import write_video
from .manifest import Manifest, dump_manifest

SUITE = "robustness.yaml"


def clip_tags(clip: RobustClip) -> list[str]:
    t, h, w = clip.frames.shape[:3]
    return [f"kind:{clip.kind}", f"res:{h}x{w}", f"frames:{t}", f"fps:{clip.fps:g}"]


def robustness_manifest(clips: list[RobustClip], seed: int) -> Manifest:
    """The suite of `clips`, their videos at ``clips/<id>.mp4`` beside it."""
    cases = [{"id": c.id, "category": "single-object", "reference": f"clips/{c.id}.mp4", "caption": c.caption,
              "targets": [c.target_prompt], "object_rgb": list(c.rgb), "tags": clip_tags(c)} for c in clips]
    description = (f"issue 14 robustness set: {len(clips)} clips drawn outside the ShapesWorld renderer "
                   f"({', '.join(KINDS)}), seed {seed}; regenerate with bench.robustness_suite")
    return Manifest.model_validate({"name": "robustness", "description": description, "cases": cases})


def _save_track(path: Path, clip: RobustClip) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, points=clip.track[None].astype(np.float64))

    return atomic_write(path, write)


def write_robustness_set(out: str | Path, count: int = 24, seed: int = DEFAULT_SEED) -> Path:
    """Write the set's clips, tracks and suite under `out`; returns the suite's path."""
    out = Path(out)
    clips = make_set(count, seed)
    for clip in clips:
        write_video(out / "clips" / f"{clip.id}.mp4", clip.frames, clip.fps)
        _save_track(out / "clips" / f"{clip.id}.npz", clip)
    header = (f"Written by: python -m follow_your_motion.bench.robustness_suite {out} --count {count} --seed {seed}\n"
              "Scored by each case's object_rgb (bench.shade_truth); per kind: "
              "python -m follow_your_motion.bench.by_tag RUN_DIR")
    return dump_manifest(robustness_manifest(clips, seed), out / SUITE, header)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m follow_your_motion.bench.robustness_suite",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the set into")
    parser.add_argument("--count", type=int, default=24, help="clips (the kinds take turns)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="a seed no tuning has seen")
    args = parser.parse_args(argv)
    try:
        path = write_robustness_set(args.out, args.count, args.seed)
    except InputError as err:
        parser.error(str(err))
    print(path)
    return path


if __name__ == "__main__":
    main()
