"""Model families behind the one backbone interface, and how a model source picks its family."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import InputError
from .base import Backbone

# diffusers pipeline class (model_index.json "_class_name") -> family
PIPELINE_FAMILIES = {"WanPipeline": "wan"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_toy_model_dir(folder: Path) -> bool:
    """A toy model folder (what `fym toyworld pretrain` writes): config.json with a transformer and a vocabulary."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"transformer", "vocabulary"} <= config.keys()


def detect_family(source: str) -> str:
    """Family of a local directory (a toy model folder, or a pipeline's model_index.json); hub ids are Wan."""
    folder = Path(source).expanduser()
    index = folder / "model_index.json"
    if not index.is_file():
        return "toy" if is_toy_model_dir(folder) else "wan"
    try:
        name = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError) as err:
        raise InputError(f"{index}: unreadable model_index.json ({err})") from err
    if name not in PIPELINE_FAMILIES:
        known = ", ".join(sorted(PIPELINE_FAMILIES))
        raise InputError(f"model {source!r}: unsupported pipeline {name!r} (supported: {known})")
    return PIPELINE_FAMILIES[name]


def backbone_class(family: str) -> type[Backbone]:
    """The backbone class of a family, without loading any model (export needs only its key names)."""
    if family == "toy":
        from .toy import ToyBackbone

        return ToyBackbone
    if family == "wan":
        from .wan import WanBackbone

        return WanBackbone
    raise InputError(f"unknown model family {family!r} (supported: wan, toy)")


def load_backbone(
    source: str | None, family: str = "auto", dtype: str = "float32", device: str = "cpu", offload: bool = False
) -> Backbone:
    """Load a backbone; `source` None means the embedded toy model."""
    if source is not None and family == "auto":
        family = detect_family(source)
    if source is None or family == "toy":
        return backbone_class("toy").load(source, device=device)
    return backbone_class(family).load(source, dtype=DTYPES[dtype], device=device, offload=offload)
