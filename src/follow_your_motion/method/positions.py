"""DiTFlow's optimised positions as a file: what `guidance.ditflow.optimise: positions` writes and `positions_from`
injects into a sampling with another prompt (method/guidance.py).

One safetensors file: per guided denoising step k (1..N) and rotary table i (the family's rope output, in its order),
the float32 delta added to the stock table, key `step{k}.table{i}`. Deltas, not whole tables: what the optimisation
found, whatever the stock tables are. Metadata (strings): `format`, `guided` (N), `steps` (the sampling's steps),
`shapes` (JSON: each table's shape), `family` (the backbone's), `model` (the source it was made with) and its
`variant` (the recipe's name of it, empty for a family's base), `latents` (JSON: the latent size C, F, h, w the
tables were made for), `transformers` (JSON: each transformer's layers, heads and head width, which tell apart
checkpoints of one variant name, as Wan2.1-T2V-1.3B and -14B).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
    transformers: list[list[int]] = field(default_factory=list)  # per transformer: layers, heads, head width

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(d.shape) for d in self.deltas[0]] if self.deltas else []

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "guided": str(len(self.deltas)), "steps": str(self.steps),
                "shapes": json.dumps(self.shapes), "family": self.family, "model": self.model, "variant": self.variant,
                "latents": json.dumps(list(self.latents)), "transformers": json.dumps(self.transformers)}


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
        header = {"guided": int(meta["guided"]), "steps": int(meta["steps"]), "shapes": json.loads(meta["shapes"]),
                  "family": meta["family"], "model": meta.get("model", ""), "variant": meta.get("variant", ""),
                  "latents": json.loads(meta["latents"]), "transformers": json.loads(meta["transformers"])}
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"{path}: a DiTFlow positions file with broken metadata ({err!r})") from err
    lists = [header["shapes"], header["transformers"]]
    if not (_ints(header["latents"]) and all(isinstance(x, list) and all(_ints(y) for y in x) for x in lists)):
        raise InputError(f"{path}: a DiTFlow positions file with broken metadata (shapes {meta['shapes']!r}, latents "
                         f"{meta['latents']!r}, transformers {meta['transformers']!r}: expected lists of "
                         "integers)")
    return header


def _ints(value: object) -> bool:
    """Whether `value` is a list of integers (what `shapes` holds per table and `latents` is)."""
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def check_header(path: Path, header: dict, guided: int, steps: int, family: str, variant: str) -> None:
    """Refuse a file made for another sampling (other guided or sampling steps: its deltas would land on other
    timesteps), another family or another variant of it (its tables mean other things). The variant is the recipe's
    name (`detect_variant`, empty for a family's base), the same for a checkpoint's hub id and its local copy."""
    if header["guided"] != guided or header["steps"] != steps:
        raise InputError(f"{path} holds positions for {header['guided']} guided steps of a {header['steps']}-step "
                         f"sampling; this sampling guides {guided} of {steps} (guidance.ditflow.guided_fraction x "
                         "generate.steps): use the settings the file was made with")
    if header["family"] != family:
        raise InputError(f"{path} holds positions of a {header['family']} model; this is a {family} model")
    if header["variant"] != variant:
        raise InputError(f"{path} holds positions of the {header['variant'] or family + ' base'} variant "
                         f"(model {header['model'] or '?'}); this model is the {variant or family + ' base'} variant")


def check_latents(path: Path, header: dict, latents: tuple[int, ...]) -> None:
    """Refuse a file made for another latent size, from the trailing sizes both give (before a model loads only the
    frames, rows and columns are known: `latents` may leave out the channels)."""
    made = tuple(header["latents"])
    if made[len(made) - len(latents):] != tuple(latents):
        raise InputError(f"{path} holds positions made for latents {list(made)}; this sampling's are {list(latents)}: "
                         "sample at the frame count and size the file was made with")


def read_positions(path: Path, guided: int, steps: int, family: str, variant: str) -> Positions:
    """The file's positions, checked against the sampling (`check_header`) and for every tensor it names."""
    header = read_header(path)
    check_header(path, header, guided, steps, family, variant)
    tensors = load_tensors(path)
    shapes = [tuple(shape) for shape in header["shapes"]]
    try:
        deltas = [[tensors[f"step{k}.table{i}"] for i in range(len(shapes))] for k in range(1, guided + 1)]
    except KeyError as err:
        raise InputError(f"{path}: a DiTFlow positions file without {err.args[0]!r}") from err
    if any(tuple(d.shape) != shape for step in deltas for d, shape in zip(step, shapes, strict=True)):
        raise InputError(f"{path}: its tensors' shapes differ from the shapes {shapes} its metadata gives")
    return Positions(deltas, header["family"], header["model"], header["variant"], tuple(header["latents"]),
                     header["steps"], header["transformers"])


def check_shapes(path: Path, positions: Positions, shapes: list[tuple[int, ...]], latents: tuple[int, ...],
                 transformers: list[list[int]]) -> None:
    """Refuse a file made with other transformers (layers, heads, head width) or
    whose tables do not fit this model at this size, naming both."""
    if positions.transformers != transformers:
        raise InputError(f"{path} holds positions made with transformers of {positions.transformers} (layers, heads, "
                         f"head width; model {positions.model or '?'}); this model's are {transformers}: sample with "
                         "the checkpoint the file was made with")
    if positions.shapes != shapes:
        made = f"latents {list(positions.latents)}, model {positions.model or '?'} {positions.variant}".rstrip()
        raise InputError(f"{path} holds rotary tables of shapes {positions.shapes} ({made}); this model at latents "
                         f"{list(latents)} has {shapes}: sample at the size and with the model the file was made with")
