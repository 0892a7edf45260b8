"""Reference videos of a benchmark run, under ``out/references/<case>-<T>x<H>x<W>.mp4``.

ShapesWorld cases are rendered here at the run's video settings (once per case and size) and keep their
exact frames and scene for ground-truth scoring; video cases are read by Transfer from where they are,
and the reference as the model saw it is written here for reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TransferConfig
from ..errors import InputError
from ..toyworld import render as sw
from ..video import write_video
from .manifest import Case

REFERENCE_FPS = 8.0  # rendered ShapesWorld references (as toyworld.examples)


@dataclass
class CaseReference:
    path: Path  # what Transfer reads
    scene: sw.SceneSpec | None = None  # ShapesWorld: the scene at the run's size
    frames: np.ndarray | None = None  # ShapesWorld: exact rendered frames


def case_reference(out: Path, case: Case, cfg: TransferConfig, cache: dict) -> CaseReference:
    """The case's reference video; ShapesWorld cases are rendered at the run's video settings (once)."""
    spec = case.shapesworld
    if spec is None:
        return CaseReference(Path(str(case.reference)))
    scene = spec.scene(*cfg.video.target())
    key = (case.id, scene)
    if key not in cache:
        try:
            clip = sw.render(scene)
        except ValueError as err:
            raise InputError(f"case {case.id!r}: cannot render its ShapesWorld reference ({err})") from err
        path = out / "references" / f"{case.id}-{scene.num_frames}x{scene.height}x{scene.width}.mp4"
        if not path.exists():
            write_video(path, clip.frames, REFERENCE_FPS)
        cache[key] = CaseReference(path, scene, clip.frames)
    return cache[key]


def write_seen_reference(out: Path, case: Case, frames: np.ndarray, fps: float) -> Path:
    """A video case's reference as the model saw it, once per case and size, for reports."""
    t, h, w = frames.shape[:3]
    path = out / "references" / f"{case.id}-{t}x{h}x{w}.mp4"
    if not path.exists():
        write_video(path, np.asarray(frames), fps)
    return path
