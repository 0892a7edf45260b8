"""DAVIS frames read straight from the archive: a sequence's JPEGs, a clip's range checked, its frames decoded.

Nothing is unpacked to disk: a suite needs a few dozen short clips out of a ~0.8 GB archive, so only their
JPEGs are read and decoded (``bench.fetch`` writes them as mp4).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .manifest import DavisClip


class DavisArchive:
    """The JPEG frames under `frames_dir/<sequence>/` of a DAVIS zip, in file-name order (00000.jpg, ...)."""

    def __init__(self, path: Path, frames_dir: str) -> None:
        self.path = Path(path)
        self.frames_dir = frames_dir.strip("/")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise InputError(f"{self.path}: not a readable zip archive ({err})") from None
        prefix = f"{self.frames_dir}/"
        self.sequences: dict[str, list[str]] = {}
        for name in self._zip.namelist():
            parts = name[len(prefix):].split("/") if name.startswith(prefix) else []
            if len(parts) == 2 and parts[1].lower().endswith(".jpg"):
                self.sequences.setdefault(parts[0], []).append(name)
        for names in self.sequences.values():
            names.sort()

    def __enter__(self) -> DavisArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self._zip.close()

    def frame_names(self, clip: DavisClip) -> list[str]:
        """The clip's JPEG members; a missing sequence or a range past its last frame is a ValueError."""
        names = self.sequences.get(clip.sequence)
        if names is None:
            raise InputError(f"{self.path}: no sequence {clip.sequence!r} under {self.frames_dir}/ "
                             f"({len(self.sequences)} sequences there)")
        if clip.end > len(names):
            raise InputError(f"{self.path}: {clip.sequence} has {len(names)} frames (0-{len(names) - 1}), but the "
                             f"case asks for frames {clip.start}-{clip.end - 1}")
        return names[clip.start:clip.end]

    def read(self, clip: DavisClip) -> np.ndarray:
        """The clip's frames, uint8 RGB (T, H, W, 3)."""
        frames = []
        for name in self.frame_names(clip):
            bgr = cv2.imdecode(np.frombuffer(self._zip.read(name), np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"{self.path}: {name} is not a readable JPEG")
            if frames and bgr.shape != frames[0].shape:
                raise InputError(f"{self.path}: {name} is {bgr.shape[1]}x{bgr.shape[0]} but the clip's first frame "
                                 f"is {frames[0].shape[1]}x{frames[0].shape[0]}")
            frames.append(bgr)
        return np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
