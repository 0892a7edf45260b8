"""``fym bench fetch``: turn a suite with DAVIS cases into one the runner can use, from the pinned archive.

What it writes under the data folder::

    DATA/
      DAVIS-2017-trainval-480p.zip          the archive (downloaded, unless `archive` names a copy on disk)
      .archive-verified.json                path, size, mtime and SHA-256 of the archive last verified
      clips/<sequence>_<start>-<end>.mp4    one clip per frame range [start, end), at the source's fps
      <suite file name>.yaml                the same cases with those clips as references: `fym bench run` it

Every case is checked against the archive (sequence present, range inside it) before a clip is written.
Each file is written atomically and nothing done is done again: the archive is hashed once (the stamp
remembers it), existing clips are kept, and a re-run with every clip in place does not touch the archive.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..runs import atomic_write_text
from ..video import write_video
from .davis import DavisArchive
from .download import FetchError, download, sha256_of
from .manifest import ArchiveSource, Case, DavisClip, dump_manifest, load_manifest, validate_manifest
from .manifest_sources import suite_path

CLIPS = "clips"
STAMP = ".archive-verified.json"


def clip_path(clip: DavisClip) -> str:
    """Where a clip goes, relative to the data folder; the range is in the name, so an edited range is a new clip."""
    return f"{CLIPS}/{clip.sequence}_{clip.start}-{clip.end}.mp4"


def fetch_suite(
    suite: str | Path = "fym-motionbench-v1", data: str | Path = "data", url: str | None = None,
    archive: str | Path | None = None,
) -> Path:
    """Fetch what `suite` (a shipped suite's name or a YAML file) needs into `data`; returns the manifest to run.

    `url` replaces the source's download address (the pinned SHA-256 still applies); `archive` is a copy of
    the archive already on disk, verified and read in place instead of downloading.
    """
    path = suite_path(suite)
    manifest = load_manifest(path)
    data = Path(data)
    out = data / path.name
    if out.resolve() == path.resolve():
        raise InputError(f"{path}: the resolved manifest would overwrite this suite; use another data folder")
    cases = [case for case in manifest.cases if case.davis is not None]
    if manifest.source is None or not cases:
        raise InputError(f"{path}: no DAVIS cases, nothing to fetch (`fym bench run` takes it as it is)")
    source = manifest.source if url is None else manifest.source.model_copy(update={"url": url})
    missing = [case for case in cases if not (data / clip_path(case.davis)).is_file()]
    if missing:
        _write_clips(_archive(source, data, archive), source, missing, data)
    resolved = manifest.model_copy(update={"cases": [_resolved(case) for case in manifest.cases]})
    validate_manifest(resolved.model_dump(mode="json"), str(out), data)  # every clip there, before writing
    header = (f"Written by `fym bench fetch` from {path.name}: DAVIS cases play their clip under {CLIPS}/, cut\n"
              f"from {source.filename} (SHA-256 {source.sha256}).")
    return dump_manifest(resolved, out, header)


def _resolved(case: Case) -> Case:
    """A DAVIS case as a video case: its clip as the reference, its sequence and range kept as a tag."""
    clip = case.davis
    if clip is None:
        return case
    tag = f"davis:{clip.sequence}:{clip.start}-{clip.end}"
    return case.model_copy(update={"reference": clip_path(clip), "tags": [*case.tags, tag]})


def _write_clips(archive: Path, source: ArchiveSource, cases: list[Case], data: Path) -> None:
    with DavisArchive(archive, source.frames_dir) as davis:
        for case in cases:  # every range first: a bad case stops the fetch before any clip is written
            try:
                davis.frame_names(case.davis)
            except ValueError as err:
                raise InputError(f"case {case.id!r}: {err}") from None
        for case in tqdm(cases, desc="clips", unit="clip", disable=None):
            target = data / clip_path(case.davis)
            if not target.is_file():  # two cases may share a clip
                write_video(target, davis.read(case.davis), source.fps)


def _archive(source: ArchiveSource, data: Path, given: str | Path | None) -> Path:
    """A verified archive: `given`, the one already in `data`, or a fresh download into `data`."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise InputError(f"{path}: archive not found")
        _verify(path, source.sha256, data, "")
        return path
    path = data / source.filename
    if path.is_file():
        _verify(path, source.sha256, data, "; delete it to download again")
        return path
    hint = f"To fetch by hand, download {source.url} and pass the file with --archive FILE."
    download(source.url, path, source.sha256, hint)
    _remember(path, source.sha256, data)
    return path


def _stamp(path: Path, sha256: str) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}


def _remember(path: Path, sha256: str, data: Path) -> None:
    atomic_write_text(data / STAMP, json.dumps(_stamp(path, sha256)) + "\n")


def _verify(path: Path, sha256: str, data: Path, advice: str) -> None:
    """Hash `path` unless the stamp says this very file (same size and mtime) was verified already."""
    try:
        if json.loads((data / STAMP).read_text()) == _stamp(path, sha256):
            return
    except (OSError, ValueError):
        pass
    actual = sha256_of(path)
    if actual != sha256:
        raise FetchError(f"{path}: checksum mismatch: expected SHA-256 {sha256}, got {actual} (not the archive the "
                         f"suite pins, or a damaged copy){advice}; nothing was changed")
    _remember(path, sha256, data)
