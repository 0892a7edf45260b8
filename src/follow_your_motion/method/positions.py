"""DiTFlow's optimised positions as a file: what `guidance.ditflow.optimise: positions` writes and `positions_from`
injects into a sampling with another prompt (method/guidance.py).

One safetensors file: per guided denoising step k (1..N) and rotary table i (the family's rope output, in its order),
the float32 delta added to the stock table, key `step{k}.table{i}`. Deltas, not whole tables: what the optimisation
found, whatever the stock tables are. Metadata (strings): `format`, `guided` (N), `steps` (the sampling's steps),
`shapes` (JSON: each table's shape), `family` (the backbone's), `model` (the source it was made with) and its
`variant` (the recipe's name of it, empty for a family's base), `latents` (JSON: the latent size C, F, h, w the
tables were made for).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..runs import atomic_save_tensors, load_tensors, read_metadata

FORMAT = "fym-ditflow-positions/1"


@dataclass
class Positions:
    """Per guided step, the deltas of every table; and what they were made for."""

    deltas: list[list[torch.Tensor]]
    family: str
    model: str
    variant: str
    latents: tuple[int, ...]
    steps: int

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(d.shape) for d in self.deltas[0]] if self.deltas else []

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "guided": str(len(self.deltas)), "steps": str(self.steps),
                "shapes": json.dumps(self.shapes), "family": self.family, "model": self.model, "variant": self.variant,
                "latents": json.dumps(list(self.latents))}


def save_positions(path: Path, positions: Positions) -> Path:
    """Write `positions` to `path` (atomically)."""
    tensors = {f"step{k}.table{i}": delta.float().clone() for k, step in enumerate(positions.deltas, start=1)
               for i, delta in enumerate(step)}
    return atomic_save_tensors(path, tensors, positions.metadata())


def read_header(path: Path) -> dict:
    """The metadata of a positions file, parsed; an InputError naming the file for a missing, unreadable or foreign
    one (nothing but the header is read: this runs before any model loads)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"guidance.ditflow.positions_from {path}: no such file (an `optimise: positions` run "
                         "writes samples/<name>_positions.safetensors)")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a DiTFlow positions file (metadata format {meta.get('format')!r}, expected "
                         f"{FORMAT!r})")
    try:
        return {"guided": int(meta["guided"]), "steps": int(meta["steps"]), "shapes": json.loads(meta["shapes"]),
                "family": meta["family"], "model": meta.get("model", ""), "variant": meta.get("variant", ""),
                "latents": json.loads(meta["latents"])}
    except (KeyError, ValueError) as err:
        raise InputError(f"{path}: a DiTFlow positions file with broken metadata ({err!r})") from err


def check_header(path: Path, header: dict, guided: int, family: str) -> None:
    """Refuse a file made for another number of guided steps or another family (its tables mean other things)."""
    if header["guided"] != guided:
        raise InputError(f"{path} holds positions for {header['guided']} guided steps; this sampling guides {guided} "
                         "(guidance.ditflow.guided_fraction x generate.steps): use the settings the file was made "
                         f"with ({header['steps']} sampling steps)")
    if header["family"] != family:
        raise InputError(f"{path} holds positions of a {header['family']} model; this is a {family} model")


def read_positions(path: Path, guided: int, family: str) -> Positions:
    """The file's positions, checked against the sampling (`check_header`) and for every tensor it names."""
    header = read_header(path)
    check_header(path, header, guided, family)
    tensors = load_tensors(path)
    shapes = [tuple(shape) for shape in header["shapes"]]
    try:
        deltas = [[tensors[f"step{k}.table{i}"] for i in range(len(shapes))] for k in range(1, guided + 1)]
    except KeyError as err:
        raise InputError(f"{path}: a DiTFlow positions file without {err.args[0]!r}") from err
    if any(tuple(d.shape) != shape for step in deltas for d, shape in zip(step, shapes, strict=True)):
        raise InputError(f"{path}: its tensors' shapes differ from the shapes {shapes} its metadata gives")
    return Positions(deltas, header["family"], header["model"], header["variant"], tuple(header["latents"]),
                     header["steps"])


def check_shapes(path: Path, positions: Positions, shapes: list[tuple[int, ...]], latents: tuple[int, ...]) -> None:
    """Refuse a file whose tables do not fit this model at this size, naming both."""
    if positions.shapes != shapes:
        made = f"latents {list(positions.latents)}, model {positions.model or '?'} {positions.variant}".rstrip()
        raise InputError(f"{path} holds rotary tables of shapes {positions.shapes} ({made}); this model at latents "
                         f"{list(latents)} has {shapes}: sample at the size and with the model the file was made with")
