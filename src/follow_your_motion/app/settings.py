"""What the page's form means as settings: the Model field, the presets and the Advanced panel, resolved through
the project's one settings precedence (recipe < preset < the fields the user filled in), so the app accepts and
refuses exactly what `fym transfer` does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from ..backbones import detect_image_mode
from ..config import HeadSettings, TransferConfig
from ..errors import InputError
from ..precedence import resolve_config
from ..recipes import merge, model_family

TOY_MODEL = "toy (embedded ShapesWorld model)"  # the Model field's default: source None
PRESETS = ("fast", "paper")
# "fast" = a quick look (the browser test runs it); "paper" = the family recipe's steps (the paper's for Wan).
FAST_STEPS = {"toy": {"spatial": 20, "motion": 60}, "wan": {"spatial": 300, "motion": 200}}
ROPE_MODES = ("index", "scaled", "none")
HEAD_RULES = get_args(HeadSettings.model_fields["rule"].annotation)
# the threshold each head rule reads: the Advanced panel's "Head alpha" sets the chosen rule's own
HEAD_THRESHOLDS = {"paper": "alpha", "release": "release_ratio", "relative": "relative_alpha"}


@dataclass(frozen=True)
class Advanced:
    """The Advanced panel; None = not changed on the page: the preset's (or the recipe's) value applies."""

    spatial_steps: int | None = None
    motion_steps: int | None = None
    rank: int | None = None
    keep_frames: int | None = None  # sparse K: latent frames per motion step; 0 = all of them
    rope: str | None = None
    head_rule: str | None = None
    head_alpha: float | None = None  # the threshold of the rule that applies (HEAD_THRESHOLDS)
    motion_scale: float | None = None
    spatial_scale: float | None = None
    seed: int | None = None
    device: str | None = None


@dataclass(frozen=True)
class TransferRequest:
    """Everything the "Transfer" button sends. `reference` is the path of the uploaded (or example) file that
    the app was handed; its name never decides where anything is written."""

    reference: str | None
    caption: str
    target_prompt: str
    model: str = TOY_MODEL
    preset: str = "fast"
    advanced: Advanced = Advanced()
    image: str | None = None
    extra: dict = field(default_factory=dict)  # further settings sections, below the fields (tests: tiny runs)


def model_source(model: str | None) -> str | None:
    """The Model field as a `model.source`: None for the embedded toy model (also when left empty)."""
    text = (model or "").strip()
    return None if text in ("", TOY_MODEL, "toy") else text


def image_to_video(model: str | None) -> bool:
    """Whether the chosen model animates a picture (shows the Image field): Wan I2V and TI2V."""
    try:
        return detect_image_mode(model_source(model)) != "none"
    except InputError:
        return False


def preset_settings(preset: str, family: str) -> dict:
    """The settings sections a preset sets for a family (below the Advanced fields)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if preset == "paper":
        return {}
    steps = FAST_STEPS.get(family, FAST_STEPS["wan"])
    return {"spatial": {"steps": steps["spatial"]}, "motion": {"steps": steps["motion"]}}


# Advanced field -> the (section, key) it sets; rank sets both LoRAs'
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "spatial_steps": (("spatial", "steps"),), "motion_steps": (("motion", "steps"),),
    "rank": (("spatial", "rank"), ("motion", "rank")), "rope": (("motion", "rope"),),
    "head_rule": (("heads", "rule"),),
    "motion_scale": (("generate", "motion_scale"),), "spatial_scale": (("generate", "spatial_scale"),),
    "seed": (("generate", "seed"),), "device": (("model", "device"),),
}


def form_flags(request: TransferRequest) -> dict:
    """The nested flags of the fields that were filled in or changed (None fields are left to the preset and the
    recipe, so their values apply as on the command line)."""
    a = request.advanced
    flags: dict = {
        "prompt": (request.caption or "").strip(),
        "target_prompt": (request.target_prompt or "").strip() or None,
        "model": {"source": model_source(request.model)},
    }
    for name, targets in FIELDS.items():
        value = getattr(a, name)
        if isinstance(value, str):
            value = value.strip() or None
        for section, key in targets if value is not None else ():
            flags.setdefault(section, {})[key] = value
    if a.keep_frames is not None:
        flags.setdefault("motion", {})["keep_frames"] = a.keep_frames or None  # 0 = every latent frame (dense)
    return flags


def _resolve(request: TransferRequest) -> TransferConfig:
    """The config the form means; a Head alpha given sets the threshold of the head rule that applies (the page's,
    a settings file's or the default), never one the rule does not read."""
    flags = form_flags(request)
    family = model_family(flags["model"])
    preset = merge(preset_settings(request.preset, family), request.extra)
    cfg = resolve_config(flags, settings=preset)
    if request.advanced.head_alpha is None:
        return cfg
    flags.setdefault("heads", {})[HEAD_THRESHOLDS[cfg.heads.rule]] = request.advanced.head_alpha
    return resolve_config(flags, settings=preset)


def resolve_request(request: TransferRequest) -> TransferConfig:
    """The run's config without its reference (the app sets that once the upload is staged). Raises InputError
    with the CLI's messages for invalid settings, an unknown model or a missing caption."""
    if not (request.caption or "").strip():
        raise InputError("no prompt given: fill in the Reference caption (what the reference shows)")
    if request.image and not image_to_video(request.model):
        raise InputError("the Image field is for image-to-video models; the chosen model is text-to-video")
    if not request.image and detect_image_mode(model_source(request.model)) == "required":
        raise InputError("the chosen model is image-to-video: give an Image (the picture to animate)")
    return _resolve(request)


def preset_fields(model: str | None, preset: str) -> Advanced:
    """The Advanced panel as the preset fills it for the model: the page shows the values a run will use (a number
    field cannot show "unset": Gradio displays and sends 0 for it)."""
    cfg = _resolve(TransferRequest(None, "", "", model=model or TOY_MODEL, preset=preset))
    return Advanced(spatial_steps=cfg.spatial.steps, motion_steps=cfg.motion.steps, rank=cfg.motion.rank,
                    keep_frames=cfg.motion.keep_frames or 0, rope=cfg.motion.rope, head_rule=cfg.heads.rule,
                    head_alpha=getattr(cfg.heads, HEAD_THRESHOLDS[cfg.heads.rule]),
                    motion_scale=cfg.generate.motion_scale, spatial_scale=cfg.generate.spatial_scale,
                    seed=cfg.generate.seed)


def changed_fields(shown: Advanced, page: Advanced) -> Advanced:
    """What the user changed on the page: the fields whose value differs from the one the page showed (the preset's
    for the model); the others are None, so the preset's, the recipe's and a settings file's values apply."""
    return Advanced(**{name: None if value == getattr(shown, name) else value
                       for name, value in vars(page).items()})
