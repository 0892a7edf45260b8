"""A run's settings, checked before anything is tuned: against the run directory they go into (a run never mixes
artifacts of different settings) and against the model they tune (what it can take). Nothing here loads a
model, so reports and the app can read run settings cheaply."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate import PartialState

from .backbones import check_rotary_config, detect_image_mode, read_geometry, variant_name
from .backbones.inputs import VideoGeometry
from .config import GenerateSettings, TransferConfig
from .errors import InputError
from .fitting import fit_frames, fit_rate, fit_video
from .recipes import model_family
from .runs import RunDir
from .video import VideoInfo, probe_video, read_image

if TYPE_CHECKING:  # for annotations only
    from .backbones.base import Backbone

# The least any model needs, known before one is loaded: two frames, of any count.
ANY_FRAMES = VideoGeometry(temporal_stride=1, spatial_stride=1, patch=(1, 1, 1))
# The reference as the model saw it, which a run keeps for generation, guidance and reports.
REFERENCE_COPY = "reference.mp4"
# Settings that do not change what tuning produces; a run may be reused with different values
# (e.g. tuned on a GPU, generated from on a laptop).
UNTUNED = {"generate": True, "target_prompt": True, "guidance": True,
           "model": {"device", "offload", "blocks_to_swap", "attention_backend", "keep_encoders", "compile"}}


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as {"section.key": value}."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_settings(run: RunDir, cfg: TransferConfig) -> None:
    """Refuse to mix artifacts of different settings in one run directory (nothing to check in a new one)."""
    if not run.config.exists():
        return
    old = flatten(TransferConfig.load(run.config).model_dump(exclude=UNTUNED))
    new = flatten(cfg.model_dump(exclude=UNTUNED))
    diffs = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in new.items() if old.get(key) != value]
    if diffs:
        raise InputError(
            f"{run.root} holds a run made with other settings ({'; '.join(diffs[:3])}); "
            "use another --out or delete it"
        )


def check_run_config(run: RunDir, cfg: TransferConfig) -> None:
    """Refuse to mix artifacts of different settings in one run directory; write config.yaml if new."""
    check_same_settings(run, cfg)
    if not run.config.exists() and PartialState().is_main_process:
        cfg.save(run.config)


def shards_the_model(cfg: TransferConfig, processes: int) -> bool:
    """Whether the job shards its transformers across its processes (`distributed: fsdp`), which happens once, at
    load, for both tuning stages and generation; refused where the stages that tune ask for different ways, or
    with `model.offload` (which moves whole components on and off the device)."""
    if processes == 1:
        return False
    ways = {s.distributed for s in (cfg.spatial, cfg.motion) if s.steps}
    if len(ways) > 1:
        raise InputError("spatial.distributed and motion.distributed differ: the transformers are sharded (fsdp) or "
                         "replicated (ddp) once for both tuning stages; give both the same")
    if ways == {"fsdp"} and cfg.model.offload:
        raise InputError("distributed: fsdp keeps each process's shard on its device, model.offload moves whole "
                         "components on and off it: choose one")
    return ways == {"fsdp"}


def check_guidance(cfg: TransferConfig, settings: GenerateSettings, run: Path) -> None:
    """What a guided sampling (`guidance.method`) of the run in `run` refuses before its model loads: what
    `check_guided_sampling` refuses, and a reference neither at its path nor kept in the run (`REFERENCE_COPY`)."""
    check_guided_sampling(cfg, settings)
    method = cfg.guidance.method
    if method == "none":
        return
    if not (cfg.reference and Path(cfg.reference).is_file()) and not (Path(run) / REFERENCE_COPY).is_file():
        raise InputError(f"guidance.method {method} reads the reference's motion: {cfg.reference} is gone and "
                         f"{run} keeps no {REFERENCE_COPY}; put the reference back at that path")


def check_guided_sampling(cfg: TransferConfig, settings: GenerateSettings) -> None:
    """What a guided sampling refuses whatever the reference (`fym plan` has none): a frame count or size other
    than the reference's (it compares the sample with the reference latent by latent), an image or an
    image-to-video model (text-to-video only), a guidance that guides no step, DiTFlow with swapped blocks, and
    transformers sharded across processes (FSDP), whose forward pass the guidance's capture would stop mid-way."""
    from .method.guidance import guided_steps  # loads torch and the backbone contract

    method, v = cfg.guidance.method, cfg.video
    if method == "none":
        return
    asked = {"frames": settings.frames, "height": settings.height, "width": settings.width}
    if any(value not in (None, getattr(v, key)) for key, value in asked.items()):
        raise InputError(f"guidance.method {method} samples at the reference's size ({v.frames} frames of "
                         f"{v.height}x{v.width}): leave generate.frames/height/width unset")
    if settings.image or detect_image_mode(cfg.model.source) == "required":
        raise InputError(f"guidance.method {method} runs text-to-video only: give no image and a text-to-video "
                         "model, or no guidance")
    guided = guided_steps(cfg.guidance, settings.steps)
    if method == "ditflow" and cfg.guidance.ditflow.optimise == "positions":
        check_positions(cfg, guided, settings.steps)
    if method == "ditflow" and cfg.model.blocks_to_swap:
        raise InputError("guidance.method ditflow backpropagates through the transformer's first blocks without "
                         "gradient checkpointing, where a swapped block's backward would read its weights in host "
                         "memory: set model.blocks_to_swap: 0 for the guided sampling, or use guidance.method flow")
    if shards_the_model(cfg, int(os.environ.get("WORLD_SIZE", "1"))):
        raise InputError(f"guidance.method {method} runs on whole transformers, not on ones sharded across "
                         "processes (distributed: fsdp): generate in one process, or with no guidance")


def check_positions(cfg: TransferConfig, guided: int, steps: int) -> None:
    """DiTFlow on positions, before the model loads: a model without rotary video positions (from its config), and
    a `positions_from` file that is missing, unreadable, or made for another sampling (guided or sampling steps),
    family, variant, or latent size (`check_positions_size`)."""
    from .method.positions import check_header, read_header

    family = model_family(cfg.model.model_dump())
    check_rotary_config(cfg.model.source, family)
    source = cfg.guidance.ditflow.positions_from
    if source is not None:
        check_header(Path(source), read_header(Path(source)), guided, steps, family, variant_name(cfg.model.source))
        check_positions_size(cfg)


def check_positions_size(cfg: TransferConfig) -> None:
    """Refuse a `positions_from` file made for another latent size than the run's clip (`cfg.video`) has: its
    latent frames, rows and columns from the model's config files (`read_geometry`); nothing where the clip's size
    or those files are not at hand yet (the tables' shapes are checked once the model is loaded)."""
    from .method.positions import check_latents, read_header

    v, source = cfg.video, cfg.guidance.ditflow.positions_from
    if source is None or None in (v.frames, v.height, v.width):
        return
    geometry = read_geometry(cfg.model.source, model_family(cfg.model.model_dump()))
    if geometry is not None:
        check_latents(Path(source), read_header(Path(source)), geometry.latent_grid(v.frames, v.height, v.width))


def check_inputs(cfg: TransferConfig, out: Path) -> VideoInfo:
    """Everything about a new run that can be checked before a model is loaded (minutes for a real checkpoint, or
    a download): the prompt; the reference (it exists, decodes, and is long enough for the model: its minimum and
    frame rule from the model's config files, or two frames where they are not at hand yet); the frame count and
    size asked for; the image to animate; the run directory. Returns the reference's probe, so it is read once."""
    if not cfg.reference:
        raise InputError("no reference video given")
    if not cfg.prompt and (cfg.spatial.steps or cfg.motion.steps or not cfg.target_prompt):
        raise InputError("no prompt given")  # a run that tunes nothing (`fym guide`) needs only a target prompt
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file, not a run directory; choose another --out")
    if (out / "config.yaml").exists():
        TransferConfig.load(out / "config.yaml")  # an unreadable one is refused now, not after loading
    if cfg.generate.image:
        read_image(cfg.generate.image)
    info = probe_video(cfg.reference)
    geometry = read_geometry(cfg.model.source, model_family(cfg.model.model_dump()))
    if geometry is None:  # the model's configs are not at hand: what any model needs, the rest once it is loaded
        least = cfg.video.model_copy(update={"fps": fit_rate(cfg.video, info, cfg.reference)[0], "frames": None})
        fit_frames(least, info, ANY_FRAMES, cfg.reference)
    else:  # as `Transfer` will fit it with the loaded model, whose geometry is this one
        video = fit_video(cfg.video, info, geometry, cfg.reference)[0]
        geometry.check(video.frames, video.height, video.width)
        video.first_frame_condition = first_frame_condition(detect_image_mode(cfg.model.source), cfg)
        fitted = cfg.model_copy(update={"video": video})
        check_same_settings(RunDir(out), fitted)  # the run's own settings
        if cfg.guidance.method == "ditflow":
            check_positions_size(fitted)
    return info


def check_downsample(backbone: Backbone, cfg: TransferConfig) -> None:
    """Refuse a `motion.downsample` the model cannot tune at: one whose shrunk clip is not a size it takes, or
    any on a family whose token positions cannot be spaced out."""
    factor, v = cfg.motion.downsample, cfg.video
    if factor == 1:
        return
    if not backbone.spaced_positions:
        raise InputError(f"{backbone.name} cannot tune on a shrunk clip (its spatial positions cannot be spaced "
                         "out): leave motion.downsample at 1")
    multiple = factor * backbone.geometry.size_multiple
    if v.height % multiple or v.width % multiple:
        raise InputError(f"motion.downsample {factor} needs a height and width that are multiples of {multiple} "
                         f"(the clip is {v.height}x{v.width}): choose another size or downsample")


def first_frame_condition(image_mode: str, cfg: TransferConfig) -> bool:
    """Whether tuning conditions on the reference's first frame: always for an image-to-video model
    (`image_mode` "required"), never for a text-to-video one ("none"), and for one that does both ("optional":
    Wan2.2-TI2V) when the run animates a picture (--image)."""
    given = cfg.video.first_frame_condition
    wanted = {"required": True, "none": False}.get(image_mode, cfg.generate.image is not None)
    if given is not None and given != wanted and image_mode != "optional":
        raise InputError(f"video.first_frame_condition: {given} is not possible with this model (image mode "
                         f"{image_mode!r})")
    return wanted if given is None else given


def open_config(run: Path) -> TransferConfig:
    """The config.yaml of an existing run directory (a clear error if `run` is not one)."""
    if not (Path(run) / "config.yaml").is_file():
        raise InputError(f"{run}: not a run directory (no config.yaml)")
    return TransferConfig.load(Path(run) / "config.yaml")
