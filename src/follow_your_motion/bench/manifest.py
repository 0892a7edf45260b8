"""Benchmark suites: a YAML manifest of cases, validated with pydantic, and loaders for other layouts.

A manifest is a YAML mapping::

    name: my-suite                      # optional
    description: what it is for         # optional
    cases:
      - id: dog-run                     # unique; letters, digits, '.', '_', '-' (no '__')
        category: single-object         # camera | single-object | multi-object | human | other
        reference: videos/dog.mp4       # a video, relative to the manifest file (or absolute) ...
        caption: a dog runs on the beach        # caption of the reference, used while tuning
        targets: [a cat runs on the beach, a robot runs on the beach]   # one or more target prompts
        tracks: tracks/dog.npz          # optional reference point tracks (see below)
      - id: orbit
        category: single-object
        reference:                      # ... or a ShapesWorld generator spec, rendered on the fly
          shapesworld:
            objects: [{shape: circle, colour: red, program: orbit-cw, size: 0.25, anchor: [0.5, 0.5]}]
            background: black           # optional: black | textured
            camera: pan-left            # optional: a camera program
            num_frames: 9               # optional: frames/height/width; default = the run's video settings
        caption: a red circle
        targets: [a blue square]

ShapesWorld cases carry exact ground truth: the renderer knows every object's track, so the runner scores
results against it (``toyworld.metrics``). Target prompts of such cases should name a colour for each
reference object, in the same order (``a blue square and a green circle``), which is how the runner
pairs reference objects with generated ones.

``tracks`` (video cases only) is an ``.npz`` file with ``points`` (N, T, 2) float (x, y) pixel positions
and optionally ``visible`` (N, T) bool, measured on the reference as the model sees it (after fitting to
the run's ``video.frames`` / ``height`` / ``width``), e.g. CoTracker tracks made elsewhere. When given, the
runner uses them as the reference side of the motion-fidelity scores instead of tracking the reference.

Every problem raises ``ValueError`` naming the file and the field (``suite.yaml: cases[2].category: ...``).
Paths in a loaded ``Manifest`` are absolute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ..toyworld import render as sw

SUITES = Path(__file__).with_name("suites")
SHAPESWORLD_SUITE = SUITES / "shapesworld.yaml"
CATEGORIES: tuple[str, ...] = ("camera", "single-object", "multi-object", "human", "other")
SHAPESWORLD_CATEGORIES = {"single": "single-object", "multi": "multi-object", "camera": "camera", "human": "human"}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShapesWorldObject(_Strict):
    shape: str
    colour: str
    program: str
    size: float = Field(0.25, gt=0, le=1)
    anchor: tuple[float, float] = (0.5, 0.5)
    phase: float = Field(0.0, ge=0, lt=1)

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: str) -> str:
        return _one_of("shape", value, (*sw.SHAPES, sw.FIGURE))

    @field_validator("colour")
    @classmethod
    def _colour(cls, value: str) -> str:
        return _one_of("colour", value, tuple(sw.COLOURS))

    @field_validator("program")
    @classmethod
    def _program(cls, value: str) -> str:
        return _one_of("program", value, sw.PRETRAIN_PROGRAMS + sw.HELDOUT_PROGRAMS + sw.HUMAN_PROGRAMS)

    def spec(self) -> sw.ObjectSpec:
        return sw.ObjectSpec(self.shape, self.colour, self.program, self.size, tuple(self.anchor), self.phase)


class ShapesWorldSpec(_Strict):
    """A ShapesWorld scene; frames/height/width left out (None) follow the run's video settings."""

    objects: list[ShapesWorldObject] = Field(min_length=1)
    background: Literal["black", "textured"] = "black"
    camera: str | None = None
    num_frames: int | None = Field(None, ge=2)
    height: int | None = Field(None, ge=16)
    width: int | None = Field(None, ge=16)

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: str | None) -> str | None:
        return None if value is None else _one_of("camera", value, sw.CAMERA_PROGRAMS)

    @model_validator(mode="after")
    def _renders(self) -> ShapesWorldSpec:
        sw.render(self.scene(9, 32, 32))  # the renderer's own checks: shape/program pairs, names, fit in frame
        return self

    def scene(self, num_frames: int, height: int, width: int) -> sw.SceneSpec:
        """The scene at this spec's size, or at the given one where the spec leaves it open."""
        return sw.SceneSpec(
            objects=tuple(o.spec() for o in self.objects),
            num_frames=self.num_frames or num_frames,
            height=self.height or height,
            width=self.width or width,
            background=self.background,
            camera=self.camera,
        )


class GeneratorReference(_Strict):
    shapesworld: ShapesWorldSpec


def _reference_kind(value: Any) -> str:
    return "generator" if isinstance(value, dict | GeneratorReference) else "video"


Reference = Annotated[
    Annotated[str, Tag("video")] | Annotated[GeneratorReference, Tag("generator")],
    Discriminator(_reference_kind),
]


class Case(_Strict):
    id: str
    category: Literal["camera", "single-object", "multi-object", "human", "other"]
    reference: Reference
    caption: Text
    targets: list[Text] = Field(min_length=1)
    tracks: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value) or "__" in value:
            raise ValueError(f"{value!r} is not a valid id (letters, digits, '.', '_', '-'; no '__')")
        return value

    @field_validator("reference")
    @classmethod
    def _video(cls, value: str | GeneratorReference) -> str | GeneratorReference:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty reference path")
        return value

    @model_validator(mode="after")
    def _tracks_need_video(self) -> Case:
        if self.tracks is not None and self.shapesworld is not None:
            raise ValueError("tracks: ShapesWorld cases take their ground truth from the renderer")
        return self

    @property
    def shapesworld(self) -> ShapesWorldSpec | None:
        return self.reference.shapesworld if isinstance(self.reference, GeneratorReference) else None

    @property
    def video(self) -> Path | None:
        return None if isinstance(self.reference, GeneratorReference) else Path(self.reference)


class Manifest(_Strict):
    name: str = "suite"
    description: str = ""
    cases: list[Case] = Field(min_length=1)

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)


# ------------------------------------------------------------------------------------------- validation


def _one_of(what: str, value: str, valid: Iterable[str]) -> str:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def _loc(loc: tuple) -> str:
    """('cases', 2, 'reference', 'generator', 'shapesworld') -> 'cases[2].reference.shapesworld'."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i and loc[i - 1] == "reference" and part in ("video", "generator"):
            continue  # the union's tag, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _error(source: str, err: ValidationError) -> ValueError:
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return ValueError(f"{source}: {_loc(tuple(first['loc']))}: {msg}{more}")


def validate_manifest(data: Any, source: str, root: Path | None = None) -> Manifest:
    """Validate a parsed manifest; relative paths resolve against `root`; errors name `source` and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a manifest is a mapping with a 'cases' list, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        raise _error(source, err) from None
    seen: dict[str, int] = {}
    for i, case in enumerate(manifest.cases):
        if case.id in seen:
            raise ValueError(f"{source}: cases[{i}].id: duplicate id {case.id!r} (first at cases[{seen[case.id]}])")
        seen[case.id] = i
    root = Path(root) if root is not None else Path.cwd()
    cases = []
    for i, case in enumerate(manifest.cases):
        update: dict[str, str] = {}
        for field in ("reference", "tracks"):
            value = getattr(case, field)
            if not isinstance(value, str):
                continue
            path = Path(value).expanduser()
            path = (path if path.is_absolute() else root / path).resolve()
            if not path.is_file():
                raise ValueError(f"{source}: cases[{i}].{field}: file not found: {path}")
            update[field] = str(path)
        if case.tracks is not None and Path(update["tracks"]).suffix.lower() != ".npz":
            raise ValueError(f"{source}: cases[{i}].tracks: expected an .npz file with 'points' (N, T, 2)")
        cases.append(case.model_copy(update=update))
    return manifest.model_copy(update={"cases": cases})


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a YAML manifest; paths inside it are relative to its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read manifest ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from err
    return validate_manifest(data, str(path), path.parent)


def dump_manifest(manifest: Manifest, path: str | Path, header: str = "") -> Path:
    """Write a manifest as YAML (open fields left out), after `header` as '#' comment lines."""
    from ..runs import atomic_write_text

    data = manifest.model_dump(mode="json", exclude_none=True)
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return atomic_write_text(Path(path), comment + yaml.safe_dump(data, sort_keys=False, width=120))


def load_tracks(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A case's ``tracks`` file: points (N, T, 2) and visibility (N, T) or None."""
    try:
        with np.load(path) as data:
            points = np.asarray(data["points"], dtype=np.float64)
            visible = np.asarray(data["visible"], dtype=bool) if "visible" in data else None
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a tracks file with 'points' (N, T, 2) ({err})") from err
    if points.ndim != 3 or points.shape[2] != 2:
        raise ValueError(f"{path}: points must have shape (N, T, 2), got {points.shape}")
    if visible is not None and visible.shape != points.shape[:2]:
        raise ValueError(f"{path}: visible must have shape {points.shape[:2]}, got {visible.shape}")
    return points, visible


def resolve_manifest(spec: str | Path | Manifest) -> Manifest:
    """A Manifest from: a Manifest, the word ``shapesworld`` (the shipped suite), a YAML file, or a folder
    (``from_folder`` when it holds a top-level prompts.txt, ``from_mtbench`` otherwise)."""
    if isinstance(spec, Manifest):
        return spec
    if str(spec) == "shapesworld":
        return load_manifest(SHAPESWORLD_SUITE)
    path = Path(spec)
    if path.is_dir():
        return from_folder(path) if (path / "prompts.txt").is_file() else from_mtbench(path)
    return load_manifest(path)


# ------------------------------------------------------------------------------------------ other layouts


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
        raise ValueError(f"{prompts}: cannot read ({err.strerror or err})") from err
    cases, where = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) not in (3, 4):
            raise ValueError(
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
        raise ValueError(f"{prompts}: no cases (every line is blank or a comment)")
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
        raise ValueError(f"{folder}: not a folder")
    found: list[tuple[Path, str | None]] = []
    for entry in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (entry / "eval_prompts.txt").is_file():
            found.append((entry, None))
        else:
            found += [(sub, entry.name) for sub in sorted(entry.iterdir()) if (sub / "eval_prompts.txt").is_file()]
    if not found:
        raise ValueError(f"{folder}: no MTBench case folders (<name>/eval_prompts.txt) found")
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
        raise ValueError(f"{path}: cannot read the reference caption ({err.strerror or err})") from err
    raise ValueError(f"{path}: empty (the reference caption is expected on its first line)")


def _mtbench_video(case: Path) -> Path:
    videos = case / "videos"
    for suffix in VIDEO_SUFFIXES:
        if (videos / f"{case.name}{suffix}").is_file():
            return videos / f"{case.name}{suffix}"
    candidates = sorted(p for p in videos.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if videos.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(f"{videos}: expected {case.name}.mp4 (or a single video), found {len(candidates)} video(s)")


# ------------------------------------------------------------------------------------ ShapesWorld suite


def _shapesworld_scene(rng: np.random.Generator, category: str) -> sw.SceneSpec:
    """One scene of a category moving with motions the toy model never saw captioned: held-out programs for
    objects (camera scenes: a held-out object program under the camera), the figure's own programs for
    `human` (the only ones a figure has)."""
    for _ in range(100):
        scene = sw.random_scene(rng, category, sw.HELDOUT_PROGRAMS)
        objects = scene.objects
        if category == "camera":  # random_scene's camera object is static; give it a held-out motion
            objects = tuple(_replace(o, program=str(rng.choice(sw.HELDOUT_PROGRAMS)), size=0.2) for o in objects)
        objects = tuple(
            _replace(o, size=round(o.size, 3), anchor=(round(o.anchor[0], 3), round(o.anchor[1], 3)),
                     phase=round(o.phase, 3) % 1.0)
            for o in objects
        )
        scene = sw.SceneSpec(objects, background=scene.background, camera=scene.camera)
        try:
            sw.render(scene)
        except ValueError:  # cannot stay in frame: draw again
            continue
        return scene
    raise RuntimeError(f"could not draw a valid {category} scene")  # pragma: no cover - never seen


def _replace(obj: sw.ObjectSpec, **changes: Any) -> sw.ObjectSpec:
    fields = {"shape": obj.shape, "colour": obj.colour, "program": obj.program, "size": obj.size,
              "anchor": obj.anchor, "phase": obj.phase}
    return sw.ObjectSpec(**(fields | changes))


def _target(rng: np.random.Generator, objects: tuple[sw.ObjectSpec, ...]) -> str:
    """A prompt naming, for each reference object in order, a colour no reference object has and (except for
    the figure, whose motions only a figure can make) another shape."""
    free = [c for c in sw.COLOURS if c not in {o.colour for o in objects}]
    colours = rng.choice(len(free), size=len(objects), replace=False)
    phrases = []
    for o, c in zip(objects, colours, strict=True):
        shape = o.shape if o.shape == sw.FIGURE else str(rng.choice([s for s in sw.SHAPES if s != o.shape]))
        phrases.append(f"a {free[int(c)]} {shape}")
    return " and ".join(phrases)


def shapesworld_suite(n_per_category: int = 2, seed: int = 0, n_targets: int = 1) -> Manifest:
    """Cases drawn on the fly over the four ShapesWorld categories (ids ``<category>-<i>``).

    Objects move with HELDOUT_PROGRAMS (single, multi, and camera scenes, where a held-out object motion is
    combined with a camera program over the textured background); human cases use the figure's programs.
    Each case has `n_targets` prompts naming other colours (and shapes) than the reference. Frame count and
    size are left open, so a run renders them at its own video settings. Deterministic in `seed`."""
    if n_per_category < 1 or n_targets < 1:
        raise ValueError("n_per_category and n_targets must be >= 1")
    rng = np.random.default_rng(seed)
    cases = []
    for category in sw.CATEGORIES:
        for i in range(n_per_category):
            scene = _shapesworld_scene(rng, category)
            spec = {
                "objects": [
                    {"shape": o.shape, "colour": o.colour, "program": o.program, "size": o.size,
                     "anchor": list(o.anchor), "phase": o.phase}
                    for o in scene.objects
                ],
                "background": scene.background,
                "camera": scene.camera,
            }
            targets: list[str] = []
            while len(targets) < n_targets:
                target = _target(rng, scene.objects)
                if target not in targets:
                    targets.append(target)
            cases.append({
                "id": f"{category}-{i}", "category": SHAPESWORLD_CATEGORIES[category],
                "reference": {"shapesworld": spec}, "caption": sw.caption(scene), "targets": targets,
            })
    description = (f"ShapesWorld: {n_per_category} case(s) per category, seed {seed}; "
                   "regenerate with bench.manifest.shapesworld_suite")
    return validate_manifest({"name": "shapesworld", "description": description, "cases": cases},
                             f"shapesworld_suite(seed={seed})")
