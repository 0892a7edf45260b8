"""Model families behind the one backbone interface, and how a model source picks its family."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import InputError
from .base import Backbone
from .inputs import VideoGeometry
from .variants import BY_HUB_ID, FAMILIES, VARIANTS, Variant

# diffusers pipeline class (model_index.json "_class_name") -> family, of the variants this project runs
PIPELINE_FAMILIES = {v.pipeline: v.family for v in VARIANTS if v.refused is None}
# pipelines this project does not run (yet): refused by name, never loaded as another
REFUSED_PIPELINES = {v.pipeline: v.refused for v in VARIANTS if v.refused is not None}
# hub id -> the recipe of its variant on top of its family's, known without its model_index.json
HUB_VARIANTS = {hub_id: v.recipe for hub_id, v in BY_HUB_ID.items() if v.recipe is not None}
VARIANT_IMAGE_MODES = {"wan2.1-i2v": "required", "wan2.1-i2v-720p": "required", "wan2.2-i2v-a14b": "required",
                       "wan2.2-ti2v-5b": "optional", "skyreels-v2-i2v": "required", "skyreels-v2-i2v-720p": "required"}
# pipelines whose every checkpoint has one image mode: LTX-2's text-to-video checkpoint also animates a picture
PIPELINE_IMAGE_MODES = {"LTX2Pipeline": "optional", "LTX2ImageToVideoPipeline": "required"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_toy_model_dir(folder: Path) -> bool:
    """A toy model folder (what `fym toyworld pretrain` writes): config.json with a transformer and a vocabulary."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"transformer", "vocabulary"} <= config.keys()


def model_index(source: str) -> tuple[dict | None, Path | None]:
    """A pipeline's model_index.json: from a local directory, or from the Hugging Face cache for a hub id that
    was downloaded before (nothing is fetched). (None, None) when there is none to read."""
    folder = Path(source).expanduser()
    index = folder / "model_index.json"
    if not index.is_file() and not folder.exists() and source.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "model_index.json")
        index = Path(cached) if isinstance(cached, str) else index
    if not index.is_file():
        return None, None
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{index}: unreadable model_index.json ({err})") from err
    if not isinstance(data, dict):
        raise InputError(f"{index}: not a diffusers model_index.json (not a JSON object)")
    return data, index


def refuse_pipeline(source: str, name: str) -> None:
    """An InputError for a pipeline class this project does not run, naming what it is and what runs."""
    if name in REFUSED_PIPELINES:
        raise InputError(f"model {source!r} is a {REFUSED_PIPELINES[name]} pipeline ({name}), which this project "
                         f"does not support yet (supported: {', '.join(sorted(PIPELINE_FAMILIES))})")
    known = ", ".join(sorted(PIPELINE_FAMILIES))
    raise InputError(f"model {source!r}: unsupported pipeline {name!r} (supported: {known})")


def hub_variant(source: str) -> Variant | None:
    """The registry's variant of a hub id, None for a local path or an id it does not list; a refused variant's
    id raises the refusal (before anything is downloaded)."""
    variant = BY_HUB_ID.get(source)
    if variant is not None and variant.refused is not None:
        refuse_pipeline(source, variant.pipeline)
    return variant


def detect_family(source: str) -> str:
    """Family of a local directory (a toy model folder, or a pipeline's model_index.json), or of a hub id: from
    its model_index.json in the local cache, else from the registry (`variants.py`). A hub id the registry does
    not list is refused before any download, naming `--family`."""
    index, _ = model_index(source)
    if index is None:
        folder = Path(source).expanduser()
        if is_toy_model_dir(folder):
            return "toy"
        if folder.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
            return "wan"  # a local path that is no pipeline: the loader says what is missing
        variant = hub_variant(source)
        if variant is None:
            raise InputError(f"model {source!r}: a hub id this project does not know, so its family cannot be told "
                             f"before downloading it; if it is a checkpoint of a supported family, name the family "
                             f"with --family ({', '.join(FAMILIES)}) or model.family in the config")
        return variant.family
    name = index.get("_class_name", "")
    if name not in PIPELINE_FAMILIES:
        refuse_pipeline(source, name)
    return PIPELINE_FAMILIES[name]


def component_config(source: str, name: str) -> dict | None:
    """A pipeline's `name` (e.g. "vae/config.json"), from a local directory or from the Hugging Face cache for a
    hub id downloaded before (nothing is fetched); None when there is none to read."""
    path = Path(source).expanduser() / name
    if not path.is_file() and source.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, name)
        path = Path(cached) if isinstance(cached, str) else path
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _transformer_config(source: str) -> dict:
    return component_config(source, "transformer/config.json") or {}


def read_geometry(source: str | None, family: str) -> VideoGeometry | None:
    """The sizes a model takes (`Backbone.config_geometry`) from its config files alone, before any weight is
    loaded; None when they are not at hand (a hub id not downloaded yet)."""
    if source is None or family == "toy":
        from .toy import default_model_dir

        meta = component_config(str(source or default_model_dir()), "config.json") or {}
        transformer = meta.get("transformer")
        return backbone_class("toy").config_geometry({}, transformer) if isinstance(transformer, dict) else None
    vae, transformer = component_config(source, "vae/config.json"), component_config(source, "transformer/config.json")
    if vae is None or transformer is None:
        return None
    try:
        return backbone_class(family).config_geometry(vae, transformer)
    except (KeyError, TypeError):  # a config this family's pipeline would not load either; loading will say why
        return None


def check_rotary_config(source: str | None, family: str) -> None:
    """Refuse, from its transformer's config.json alone, a model whose video positions are no rotary tables
    (`Backbone.check_rotary_config`); nothing where the config is not at hand (the loaded model says it then)."""
    if source is None or family == "toy":
        return
    transformer = component_config(source, "transformer/config.json")
    if transformer is not None:
        backbone_class(family).check_rotary_config(transformer)


def named_720p(index: Path) -> bool:
    """Whether a checkpoint's folder is named for a 720P release: the folder itself or, in the Hugging Face cache
    (<cache>/models--org--name/snapshots/<hash>/), its repository's. Wan2.1-I2V-14B and SkyReels-V2 ship 720P and
    480P / 540P checkpoints with identical configs, so the name is all that tells them apart."""
    folder = index.parent
    names = [folder.name] + ([folder.parents[1].name] if folder.parent.name == "snapshots" else [])
    return any("720p" in name.lower() for name in names)


def detect_variant(source: str) -> str | None:
    """The recipe of a known variant within its family: a known hub id's, or from the pipeline's model_index.json
    (image-to-video; a second transformer: Wan2.2-A14B; expand_timesteps: Wan2.2-TI2V-5B; SkyReels-V2
    image-to-video; a folder named for a 720P release: `named_720p`); None = the family's."""
    if source in BY_HUB_ID and not Path(source).expanduser().exists():  # (a cached copy's folder is a hash)
        return HUB_VARIANTS.get(source)
    index, path = model_index(source)
    if index is None or path is None:
        return None
    if index.get("_class_name") not in PIPELINE_FAMILIES:
        return None
    two_experts = (index.get("transformer_2") or [None])[0] is not None
    hd = "-720p" if named_720p(path) else ""
    if index.get("_class_name") == "CogVideoXPipeline":
        return "cogvideox1.5" if _transformer_config(source).get("patch_size_t") == 2 else None
    if index.get("_class_name") == "SkyReelsV2ImageToVideoPipeline":
        return "skyreels-v2-i2v" + hd
    if index.get("_class_name") == "SkyReelsV2Pipeline":
        return "skyreels-v2-720p" if hd else None
    if index.get("_class_name") == "WanImageToVideoPipeline":
        return "wan2.2-i2v-a14b" if two_experts else "wan2.1-i2v" + hd
    if index.get("_class_name") != "WanPipeline":
        return None
    if two_experts:
        return "wan2.2-t2v-a14b"
    if index.get("expand_timesteps"):
        return "wan2.2-ti2v-5b"
    return None


def variant_name(source: str | None) -> str:
    """`detect_variant`'s name of a model, "" for a family's base or the toy (what a DiTFlow positions file records,
    and is checked against)."""
    return (detect_variant(source) if source else None) or ""


def detect_image_mode(source: str | None) -> str:
    """Whether a model animates a given picture, from its variant or its pipeline class (a local directory's
    model_index.json, or a hub id's registry entry), without loading it: "required" (image-to-video), "optional"
    (Wan2.2-TI2V, LTX-2) or "none"."""
    if not source:
        return "none"
    index, _ = model_index(source)
    pipeline = (index or {}).get("_class_name") or getattr(BY_HUB_ID.get(source), "pipeline", None)
    return VARIANT_IMAGE_MODES.get(detect_variant(source) or "") or PIPELINE_IMAGE_MODES.get(pipeline, "none")


def backbone_class(family: str) -> type[Backbone]:
    """The backbone class of a family, without loading any model (export needs only its key names)."""
    if family == "toy":
        from .toy import ToyBackbone

        return ToyBackbone
    if family == "wan":
        from .wan import WanBackbone

        return WanBackbone
    if family == "ltx":
        from .ltx import LTXBackbone

        return LTXBackbone
    if family == "cogvideox":
        from .cogvideox import CogVideoXBackbone

        return CogVideoXBackbone
    if family == "hunyuan_video15":
        from .hunyuan_video15 import HunyuanVideo15Backbone

        return HunyuanVideo15Backbone
    if family == "skyreels_v2":
        from .skyreels_v2 import SkyReelsV2Backbone

        return SkyReelsV2Backbone
    if family == "kandinsky5":
        from .kandinsky5 import Kandinsky5Backbone

        return Kandinsky5Backbone
    if family == "ltx2":
        from .ltx2 import LTX2Backbone

        return LTX2Backbone
    raise InputError(f"unknown model family {family!r} (supported: {', '.join(FAMILIES)}, toy)")


def load_backbone(
    source: str | None, family: str = "auto", dtype: str = "float32", device: str = "auto", offload: bool = False,
    blocks_to_swap: int = 0,
) -> Backbone:
    """Load a backbone; `source` None means the embedded toy model; `device` "auto": `devices.pick_device`;
    `blocks_to_swap`: that many blocks of each transformer in host memory between their uses (`block_swap`)."""
    from ..devices import pick_device

    device = pick_device(device, dtype)
    if source is not None and family == "auto":
        family = detect_family(source)
    if source is None or family == "toy":
        if blocks_to_swap:
            raise InputError("model.blocks_to_swap is for the diffusers models; the toy model has no blocks to swap")
        return backbone_class("toy").load(source, device=device)
    return backbone_class(family).load(source, dtype=DTYPES[dtype], device=device, offload=offload,
                                       blocks_to_swap=blocks_to_swap)
