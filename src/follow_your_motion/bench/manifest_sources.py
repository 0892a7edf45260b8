"""Manifests from what ``fym bench run`` is given: a YAML file, a folder of videos, MTBench, or a shipped suite."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError
from .manifest import Manifest, load_manifest, validate_manifest
from .shapesworld_suite import SHAPESWORLD_SUITE

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
MOTIONBENCH_V1 = Path(__file__).with_name("suites") / "fym_motionbench_v1.yaml"
SHIPPED_SUITES = {"shapesworld": SHAPESWORLD_SUITE, "fym-motionbench-v1": MOTIONBENCH_V1}


def suite_path(spec: str | Path) -> Path:
    """The YAML file of a shipped suite's name (SHIPPED_SUITES), or `spec` itself as a path."""
    return SHIPPED_SUITES.get(str(spec), Path(spec))


def resolve_manifest(spec: str | Path | Manifest) -> Manifest:
    """A Manifest the runner can use, from: a Manifest, a shipped suite's name (SHIPPED_SUITES), a YAML file,
    or a folder (``from_folder`` when it holds a top-level prompts.txt, ``from_mtbench`` otherwise).

    DAVIS references name frames in an archive, not videos: such a manifest must go through
    ``fym bench fetch`` first, and the manifest it writes is what runs."""
    if isinstance(spec, Manifest):
        manifest = spec
    elif str(spec) not in SHIPPED_SUITES and Path(spec).is_dir():
        path = Path(spec)
        manifest = from_folder(path) if (path / "prompts.txt").is_file() else from_mtbench(path)
    else:
        manifest = load_manifest(suite_path(spec))
    for case in manifest.cases:
        if case.davis is not None:
            suite = "SUITE" if isinstance(spec, Manifest) else spec
            raise InputError(
                f"case {case.id!r} references DAVIS frames, not a video: run `fym bench fetch --suite {suite} "
                "--data DATA` first, then run the manifest it writes under DATA"
            )
    return manifest


def _case_id(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
    cleaned = re.sub(r"_{2,}", "_", cleaned)
    return cleaned or "case"


def from_folder(folder: str | Path, category: str = "other") -> Manifest:
    """A plain folder of videos with a ``prompts.txt`` beside them, one case per line::

        <video file name>\\t<source caption>\\t<target prompt 1>|<target prompt 2>|...[\\t<category>]

    Fields are separated by TABs; target prompts by '|'. The optional 4th field is the case's category
    (default: `category`). Blank lines and lines starting with '#' are ignored. The case id is the video's
    file name without its suffix (characters outside [A-Za-z0-9._-] become '-').
    """
    folder = Path(folder)
    prompts = folder / "prompts.txt"
    try:
        lines = prompts.read_text().splitlines()
    except OSError as err:
        raise InputError(f"{prompts}: cannot read ({err.strerror or err})") from err
    cases, where = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) not in (3, 4):
            raise InputError(
                f"{prompts}:{number}: expected '<video>\\t<caption>\\t<target 1>|<target 2>...[\\t<category>]' "
                f"(TAB-separated), got {len(fields)} field(s)"
            )
        video, caption, targets = (f.strip() for f in fields[:3])
        case = {
            "id": _case_id(Path(video).stem),
            "category": fields[3].strip() if len(fields) == 4 else category,
            "reference": video,
            "caption": caption,
            "targets": [t.strip() for t in targets.split("|")],
        }
        cases.append(case)
        where.append(number)
    if not cases:
        raise InputError(f"{prompts}: no cases (every line is blank or a comment)")
    try:
        return validate_manifest({"name": folder.name, "cases": cases}, str(prompts), folder)
    except ValueError as err:
        raise _line_error(err, prompts, where) from None


def _line_error(err: ValueError, source: Path, where: list) -> ValueError:
    """Rewrite 'file: cases[i].field: msg' to name the line (or folder) case i came from."""
    text = str(err)
    match = re.match(rf"^{re.escape(str(source))}: cases\[(\d+)\]\.?(.*)$", text, re.S)
    if not match:
        return err
    origin = where[int(match.group(1))]
    prefix = f"{source}:{origin}" if isinstance(origin, int) else str(origin)
    return ValueError(f"{prefix}: {match.group(2)}")


def from_mtbench(folder: str | Path, category: str = "other") -> Manifest:
    """DeT's MTBench, in the layout DeT's ``evaluation.py`` and its ``data/`` examples read::

        MTBench/
          <name>/                          one folder per reference video (case id = <name>)
            videos/<name>.mp4              the reference (any suffix in VIDEO_SUFFIXES; or the only video there)
            prompts.txt                    its caption (first non-empty line), used while tuning
            eval_prompts.txt               the target prompts, one per line (trailing spaces stripped)
            masks/, trajectories/, ...     ignored
          <group>/<name>/...               one level of grouping folders (e.g. easy/ medium/ hard/) is also
                                           accepted; the group becomes a tag and, on a name clash, an id prefix

    A case folder is any folder holding ``eval_prompts.txt``. MTBench has no motion categories, so every
    case gets `category`. The layout is assumed from DeT's release (the data set itself is not bundled).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: list[tuple[Path, str | None]] = []
    for entry in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (entry / "eval_prompts.txt").is_file():
            found.append((entry, None))
        else:
            found += [(sub, entry.name) for sub in sorted(entry.iterdir()) if (sub / "eval_prompts.txt").is_file()]
    if not found:
        raise InputError(f"{folder}: no MTBench case folders (<name>/eval_prompts.txt) found")
    names = [p.name for p, _ in found]
    cases, where = [], []
    for path, group in found:
        name = path.name
        case_id = _case_id(f"{group}-{name}" if group and names.count(name) > 1 else name)
        caption = _first_line(path / "prompts.txt")
        targets = [line.strip() for line in (path / "eval_prompts.txt").read_text().splitlines() if line.strip()]
        cases.append({
            "id": case_id, "category": category, "reference": str(_mtbench_video(path)), "caption": caption,
            "targets": targets, "tags": [f"group:{group}"] if group else [],
        })
        where.append(path / "eval_prompts.txt")
    try:
        return validate_manifest({"name": folder.name, "cases": cases}, str(folder), folder)
    except ValueError as err:
        raise _line_error(err, folder, where) from None


def _first_line(path: Path) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                return line.strip()
    except OSError as err:
        raise InputError(f"{path}: cannot read the reference caption ({err.strerror or err})") from err
    raise InputError(f"{path}: empty (the reference caption is expected on its first line)")


def _mtbench_video(case: Path) -> Path:
    videos = case / "videos"
    for suffix in VIDEO_SUFFIXES:
        if (videos / f"{case.name}{suffix}").is_file():
            return videos / f"{case.name}{suffix}"
    candidates = sorted(p for p in videos.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if videos.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(f"{videos}: expected {case.name}.mp4 (or a single video), found {len(candidates)} video(s)")
