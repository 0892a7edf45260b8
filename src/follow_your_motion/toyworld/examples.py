"""The bundled reference clips: one per benchmark category, each moving with a held-out program."""

from __future__ import annotations

from pathlib import Path

from ..video import write_video
from .render import ObjectSpec, SceneSpec, render

EXAMPLES = {
    "single-orbit-cw": SceneSpec((ObjectSpec("circle", "red", "orbit-cw"),)),
    "single-zigzag": SceneSpec((ObjectSpec("square", "yellow", "zigzag"),)),
    "single-figure-eight": SceneSpec((ObjectSpec("triangle", "green", "figure-eight"),)),
    "multi-bounce-spiral": SceneSpec(
        (ObjectSpec("circle", "orange", "bounce", anchor=(0.2, 0.2)),
         ObjectSpec("square", "cyan", "spiral", anchor=(0.8, 0.8)))
    ),
    "camera-zoom-in": SceneSpec((ObjectSpec("square", "white", "static"),), background="textured", camera="zoom-in"),
    "human-wave": SceneSpec((ObjectSpec("figure", "purple", "wave", size=0.6),)),
}
FPS = 8.0


def write_examples(folder: Path) -> list[Path]:
    """Render every example to `folder/<name>.mp4` with its caption in `<name>.txt`."""
    written = []
    for name, scene in EXAMPLES.items():
        clip = render(scene)
        written.append(write_video(folder / f"{name}.mp4", clip.frames, FPS))
        (folder / f"{name}.txt").write_text(clip.caption + "\n")
    return written
