"""Benchmark suites: a YAML manifest of cases, validated with pydantic.

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
        object_rgb: [230, 40, 40]       # optional: the exact colour of the clip's one object on black (see below)
      - id: orbit
        category: single-object
        reference:                      # ... or a ShapesWorld generator spec, rendered on the fly
          shapesworld:
            objects: [{shape: circle, colour: red, program: orbit-cw, size: 0.25, anchor: [0.5, 0.5]}]
                                        # an object may add `stripes: <colour>` (bands of a second colour)
            background: black           # optional: black | textured | dim-<colour> (e.g. dim-green)
            camera: pan-left            # optional: a camera program
            num_frames: 9               # optional: frames/height/width; default = the run's video settings
        caption: a red circle
        targets: [a blue square]
      - id: bear
        category: single-object
        reference:                      # ... or frames [start, end) of a DAVIS sequence (needs `source`)
          davis: {sequence: bear, start: 0, end: 49}
        caption: a brown bear walks along the rocks
        targets: [a polar bear walks along the rocks]
    source:                             # where DAVIS frames come from (only with davis references)
      url: https://.../DAVIS-2017-trainval-480p.zip
      sha256: <64 hex digits>           # of the archive; `fym bench fetch` refuses any other file
      frames_dir: DAVIS/JPEGImages/480p # folder in the archive with one folder of JPEG frames per sequence
      fps: 24                           # rate the clips are written at (DAVIS frames carry none)

ShapesWorld cases carry exact ground truth: the renderer knows every object's track, so the runner scores
results against it (``toyworld.metrics``). Target prompts of such cases should name a colour for each
reference object, in the same order (``a blue square and a green circle``), which is how the runner
pairs reference objects with generated ones.

``tracks`` (video cases only) is an ``.npz`` file with ``points`` (N, T, 2) float (x, y) pixel positions
and optionally ``visible`` (N, T) bool, measured on the reference as the model sees it (after fitting to
the run's ``video.frames`` / ``height`` / ``width``), e.g. CoTracker tracks made elsewhere. When given, the
runner uses them as the reference side of the motion-fidelity scores instead of tracking the reference.

``object_rgb`` (video cases only) says that the clip shows one object of exactly that colour on black, and
its caption names that colour's word (the robustness set, ``bench.robustness_suite``): the runner then scores
the ShapesWorld trajectory metrics against it (``bench.shade_truth``).

DAVIS cases name frames inside an archive, not a video: ``fym bench fetch`` (``bench.fetch``) downloads the
archive, cuts each case's clip to an mp4 and writes a resolved manifest of plain video cases for the runner.

Every problem raises ``ValueError`` naming the file and the field (``suite.yaml: cases[2].category: ...``).
Paths in a loaded ``Manifest`` are absolute. Manifests of other layouts (a folder with prompts.txt,
MTBench) come from ``manifest_sources``; the shipped ShapesWorld suite from ``shapesworld_suite``.
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

from ..errors import InputError
from ..toyworld import render as sw

CATEGORIES: tuple[str, ...] = ("camera", "single-object", "multi-object", "human", "other")
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
    stripes: str | None = None  # a second colour: the object is drawn in bands of both

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: str) -> str:
        return _one_of("shape", value, (*sw.SHAPES, sw.FIGURE))

    @field_validator("colour", "stripes")
    @classmethod
    def _colour(cls, value: str | None) -> str | None:
        return None if value is None else _one_of("colour", value, tuple(sw.COLOURS))

    @field_validator("program")
    @classmethod
    def _program(cls, value: str) -> str:
        return _one_of("program", value, sw.PRETRAIN_PROGRAMS + sw.HELDOUT_PROGRAMS + sw.HUMAN_PROGRAMS)

    def spec(self) -> sw.ObjectSpec:
        return sw.ObjectSpec(self.shape, self.colour, self.program, self.size, tuple(self.anchor), self.phase,
                             self.stripes)


class ShapesWorldSpec(_Strict):
    """A ShapesWorld scene; frames/height/width left out (None) follow the run's video settings."""

    objects: list[ShapesWorldObject] = Field(min_length=1)
    background: str = "black"
    camera: str | None = None
    num_frames: int | None = Field(None, ge=2)
    height: int | None = Field(None, ge=16)
    width: int | None = Field(None, ge=16)

    @field_validator("background")
    @classmethod
    def _background(cls, value: str) -> str:
        return _one_of("background", value, sw.BACKGROUNDS)

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


class DavisClip(_Strict):
    """Frames [start, end) of a DAVIS sequence, counted from its first JPEG (00000.jpg)."""

    sequence: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    start: int = Field(0, ge=0)
    end: int = Field(gt=0)

    @model_validator(mode="after")
    def _range(self) -> DavisClip:
        if self.end <= self.start:
            raise InputError(f"empty frame range: end ({self.end}) must be greater than start ({self.start})")
        return self


class DavisReference(_Strict):
    davis: DavisClip


class ArchiveSource(_Strict):
    """The archive DAVIS references are cut from, pinned by its SHA-256 so every fetch yields the same clips."""

    url: Text
    sha256: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[0-9a-f]{64}$")]
    frames_dir: Text = "DAVIS/JPEGImages/480p"
    fps: float = Field(24.0, gt=0)

    @property
    def filename(self) -> str:
        """The archive's file name, taken from the URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _reference_kind(value: Any) -> str:
    if isinstance(value, DavisReference) or (isinstance(value, dict) and "davis" in value):
        return "davis"
    return "generator" if isinstance(value, dict | GeneratorReference) else "video"


Reference = Annotated[
    Annotated[str, Tag("video")] | Annotated[GeneratorReference, Tag("generator")]
    | Annotated[DavisReference, Tag("davis")],
    Discriminator(_reference_kind),
]


Channel = Annotated[int, Field(ge=0, le=255)]


class Case(_Strict):
    id: str
    category: Literal["camera", "single-object", "multi-object", "human", "other"]
    reference: Reference
    caption: Text
    targets: list[Text] = Field(min_length=1)
    tracks: str | None = None
    object_rgb: tuple[Channel, Channel, Channel] | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_PATTERN.match(value) or "__" in value:
            raise InputError(f"{value!r} is not a valid id (letters, digits, '.', '_', '-'; no '__')")
        return value

    @field_validator("reference")
    @classmethod
    def _video(cls, value: str | GeneratorReference | DavisReference) -> str | GeneratorReference | DavisReference:
        if isinstance(value, str) and not value.strip():
            raise InputError("empty reference path")
        return value

    @model_validator(mode="after")
    def _tracks_need_video(self) -> Case:
        if self.object_rgb is not None and self.video is None:
            raise InputError("object_rgb: only a video case has one (a ShapesWorld scene names its colours; a "
                             "DAVIS case is a video only once `fym bench fetch` has cut it)")
        if self.tracks is not None and self.shapesworld is not None:
            raise InputError("tracks: ShapesWorld cases take their ground truth from the renderer")
        if self.tracks is not None and self.davis is not None:
            raise InputError("tracks: a DAVIS case has no video yet; add them to the manifest `fym bench fetch` writes")
        return self

    @property
    def shapesworld(self) -> ShapesWorldSpec | None:
        return self.reference.shapesworld if isinstance(self.reference, GeneratorReference) else None

    @property
    def davis(self) -> DavisClip | None:
        return self.reference.davis if isinstance(self.reference, DavisReference) else None

    @property
    def video(self) -> Path | None:
        return Path(self.reference) if isinstance(self.reference, str) else None


class Manifest(_Strict):
    name: str = "suite"
    description: str = ""
    source: ArchiveSource | None = None
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
        raise InputError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def _loc(loc: tuple) -> str:
    """('cases', 2, 'reference', 'generator', 'shapesworld') -> 'cases[2].reference.shapesworld'."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i and loc[i - 1] == "reference" and part in ("video", "generator", "davis"):
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
        raise InputError(f"{source}: a manifest is a mapping with a 'cases' list, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        raise _error(source, err) from None
    seen: dict[str, int] = {}
    for i, case in enumerate(manifest.cases):
        if case.id in seen:
            raise InputError(f"{source}: cases[{i}].id: duplicate id {case.id!r} (first at cases[{seen[case.id]}])")
        seen[case.id] = i
        if case.davis is not None and manifest.source is None:
            raise InputError(f"{source}: cases[{i}].reference: a DAVIS reference needs the manifest's `source` "
                             "(the archive's url and sha256)")
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
                raise InputError(f"{source}: cases[{i}].{field}: file not found: {path}")
            update[field] = str(path)
        if case.tracks is not None and Path(update["tracks"]).suffix.lower() != ".npz":
            raise InputError(f"{source}: cases[{i}].tracks: expected an .npz file with 'points' (N, T, 2)")
        cases.append(case.model_copy(update=update))
    return manifest.model_copy(update={"cases": cases})


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a YAML manifest; paths inside it are relative to its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read manifest ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from err
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
        raise InputError(f"{path}: not a tracks file with 'points' (N, T, 2) ({err})") from err
    if points.ndim != 3 or points.shape[2] != 2:
        raise InputError(f"{path}: points must have shape (N, T, 2), got {points.shape}")
    if visible is not None and visible.shape != points.shape[:2]:
        raise InputError(f"{path}: visible must have shape {points.shape[:2]}, got {visible.shape}")
    return points, visible
