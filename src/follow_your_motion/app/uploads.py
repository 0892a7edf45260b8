"""Safe file handling: the app, never an uploaded file's name, chooses every path it writes.

A run directory is named `<UTC time>-<key>`, where the key hashes the video's bytes and the settings; an upload is
copied into it under a fixed name and decoded before it is kept. The same video with the same settings finds its
earlier run directory again, so a cancelled transfer resumes when it is submitted again. Only files inside the
folders the app owns (the upload cache and the bundled examples, both inside the runs folder) are accepted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..video import read_image, read_video

INPUT_STEM = "input"  # the staged reference is <run>/input<suffix>
IMAGE_STEM = "image"  # the staged picture to animate (image-to-video) is <run>/image<suffix>
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
UPLOAD_DIR = ".gradio"  # inside the runs folder: where the web layer stores uploads (GRADIO_TEMP_DIR)
EXAMPLES_DIR = ".examples"  # inside the runs folder: the rendered bundled examples


@dataclass(frozen=True)
class Staged:
    """An accepted reference: its run directory, the app's copy in it, and whether this call made the directory
    (only then may a refusal later on remove it)."""

    run_dir: Path
    video: Path
    fresh: bool
    source: Path | None = None  # the upload it was copied from (deleted again if the model refuses the video)


def inside(root: Path, path: str | Path) -> Path:
    """`path` resolved (symlinks and `..` followed) if it lies inside `root`; InputError otherwise."""
    root, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise InputError(f"{Path(path).name or path}: not a file the app was given (only uploads and the bundled "
                         "examples are read)")
    return resolved


def accepted_file(path: str | Path, roots: list[Path]) -> Path:
    """The resolved `path` if it is a file inside one of `roots` (the folders the app owns)."""
    for root in roots:
        try:
            resolved = inside(root, path)
        except InputError:
            continue
        if not resolved.is_file():
            raise InputError("the uploaded file is gone; upload it again")
        return resolved
    raise InputError("the reference is not an upload or a bundled example; upload the video again")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safe_suffix(path: str | Path, known: frozenset[str] = VIDEO_SUFFIXES, default: str = ".mp4") -> str:
    """A known suffix of `path` (lower case), else `default`: the only part of a name the app keeps."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in known else default


def run_name(key: str, now: float | None = None) -> str:
    """`YYYYmmdd-HHMMSS-<key>`: sortable by time, found again by its key."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now)) + f"-{key}"


def find_run(runs_root: Path, key: str) -> Path | None:
    """The earlier run directory made for the same video and settings, if any."""
    matches = sorted(p for p in Path(runs_root).glob(f"*-{key}") if p.is_dir())
    return matches[-1] if matches else None


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stage_reference(upload: Path, runs_root: Path, key: str) -> Staged:
    """Copy `upload` into the run directory of `key` (made if new) as input<suffix>, and check it decodes as a
    video. A refused file leaves nothing behind: a directory made here is removed again."""
    runs_root = Path(runs_root)
    existing = find_run(runs_root, key)
    run_dir = existing or runs_root / run_name(key)
    fresh = existing is None
    target = run_dir / f"{INPUT_STEM}{safe_suffix(upload)}"
    if not fresh and target.is_file():
        return Staged(run_dir, target, fresh, Path(upload))  # same key: the same bytes are already there
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        _copy_atomic(Path(upload), target)
        read_video(target, max_frames=2)  # InputError for anything that is not a decodable video
    except BaseException as err:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        if isinstance(err, InputError):  # name the file the user gave, not the copy that no longer exists
            raise InputError(str(err).replace(str(target), Path(upload).name)) from err
        raise
    return Staged(run_dir, target, fresh, Path(upload))


def stage_image(upload: Path, staged: Staged) -> Path:
    """Copy the picture to animate into the run directory as image<suffix> and check it decodes; a refused one
    leaves nothing behind (nor the run directory, if this job made it)."""
    target = staged.run_dir / f"{IMAGE_STEM}{safe_suffix(upload, IMAGE_SUFFIXES, '.png')}"
    try:
        _copy_atomic(Path(upload), target)
        read_image(target)
    except BaseException as err:
        target.unlink(missing_ok=True)
        discard_run(staged)
        if isinstance(err, InputError):
            raise InputError(str(err).replace(str(target), Path(upload).name)) from err
        raise
    return target


def discard_upload(path: str | Path, upload_root: Path) -> None:
    """Delete a refused upload from the web layer's cache (and its folder if now empty); anything that is not
    inside the cache is left alone."""
    try:
        resolved = inside(upload_root, path)
    except InputError:
        return
    if resolved.is_file():
        resolved.unlink()
        try:
            if resolved.parent != Path(upload_root).resolve():
                resolved.parent.rmdir()
        except OSError:
            pass


def discard_run(staged: Staged) -> None:
    """Remove a run directory this app made for a job that was refused before tuning started."""
    if staged.fresh:
        shutil.rmtree(staged.run_dir, ignore_errors=True)
