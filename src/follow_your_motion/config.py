"""The settings of every stage: the pydantic schema a run's `config.yaml` is validated with, saved and loaded as YAML.

A run directory's `config.yaml` is the complete record of what produced its artifacts; loading it and
running again reproduces them. Which values a run starts from (its family's recipe) is `recipes.py`; how the
recipe, a YAML file and the command line's flags combine is `precedence.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError

# The choices of the method's settings; method/ checks its arguments against these (config never imports method).
Sampling = Literal["uniform-random-phase", "uniform", "random"]
RopeMode = Literal["index", "scaled", "none"]
MotionLossForm = Literal["paper", "release"]
GuidanceMethod = Literal["none", "ditflow", "flow"]
GUIDANCE_METHODS: tuple[str, ...] = get_args(GuidanceMethod)


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Settings):
    source: str | None = None  # hub id or local diffusers directory; None = the embedded toy model
    family: Literal["auto", "wan", "ltx", "cogvideox", "hunyuan_video15", "skyreels_v2", "kandinsky5", "ltx2",
                    "toy"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # "auto": CUDA, then Apple MPS where it runs the dtype, else the CPU (devices.pick_device)
    offload: bool = False  # diffusers' model CPU offload: each component on the device only while it runs
    attention_backend: str | None = None  # diffusers' attention backend (native, flash, sage, ...); None: default
    # Encode and decode the video in overlapping spatial tiles (diffusers' VAE tiling); None: the family's default,
    # on where its recipe clip needs it to fit 80 GB (HunyuanVideo 1.5), off elsewhere
    vae_tiling: bool | None = None
    # Without offload, the text encoder(s), VAE and image encoder go to the CPU once tuning's encodings are cached
    # (UMT5-XXL alone is about 11 GB in bf16) and come back only to encode or generate; true keeps them resident.
    keep_encoders: bool = False
    compile: bool = False  # torch.compile each transformer block (regional compilation) for tuning and generation
    # Keep the last N blocks of each transformer in host memory, each brought to the device only while it runs
    # (backbones/block_swap.py): fits a transformer larger than the card, at the cost of copying them every step
    blocks_to_swap: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _offload_moves_everything(self) -> ModelSettings:
        if self.offload and self.keep_encoders:
            raise ValueError("keep_encoders keeps the encoders on the device, offload moves every component off it "
                             "between uses: choose one")
        if self.blocks_to_swap and self.offload:
            raise ValueError("blocks_to_swap moves the transformer's blocks one at a time, offload the whole "
                             "transformer: choose one (blocks_to_swap fits larger models)")
        if self.blocks_to_swap and self.compile:
            raise ValueError("compile traces the transformer blocks, whose weights blocks_to_swap moves between "
                             "devices as they run: leave one of them off")
        return self


class VideoSettings(Settings):
    """How the reference is cut and sized. `frames`, `height`, `width` left unset are chosen from the clip
    (`fit.fit_video`): the recipe's `auto_frames`, or the most valid frames the clip has if it is shorter; the
    valid size nearest to `auto_size`'s pixel count at the clip's aspect ratio."""

    frames: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    # the rate frames are taken at, the model's (its recipe's; a clip that plays slower is taken one for one), in a
    # window from `start` on; None: spread the frames over the whole clip (the toy model, which has no rate)
    fps: float | None = Field(None, gt=0)
    start: float = Field(0.0, ge=0)
    # tune conditioned on the reference's first frame (image-to-video); None: the model's way (always for I2V,
    # for TI2V when the run is given --image), recorded in the run's config
    first_frame_condition: bool | None = None
    auto_frames: int = Field(81, ge=1)
    auto_size: tuple[int, int] = (480, 832)  # (height, width): its pixel count and orientation

    @model_validator(mode="after")
    def _both_sides(self) -> VideoSettings:
        if (self.height is None) != (self.width is None):
            raise ValueError("give both video height and width (--size HxW), or neither")
        return self

    def target(self) -> tuple[int, int, int]:
        """(frames, height, width) without a clip to fit: the given values, else the recipe's."""
        height, width = (self.height, self.width) if self.height else self.auto_size
        return self.frames or self.auto_frames, height, width


class HeadSettings(Settings):
    select: Literal["classified", "all"] = "classified"  # "all": LoRA on every head (the no-decoupling ablation)
    rule: Literal["paper", "release", "relative"] = "paper"
    alpha: float = Field(1.25, gt=0)  # paper: temporal iff sim_s < alpha * sim_t
    # relative (grid-independent): temporal iff (sim_s / sim_t) / a structureless head's < relative_alpha; 1 = a
    # head that favours the keys at its place in other frames more than even attention does (docs/method.md)
    relative_alpha: float = Field(1.0, gt=0)
    release_ratio: float = Field(1.3, gt=0)  # release: temporal iff mass_t >= ratio * mass_s
    sigma: float = Field(0.9, gt=0, le=1)  # noise level of the reference for the capture pass
    num_queries: int = Field(1024, ge=1)
    radius: int = Field(0, ge=0)
    min_heads: int = Field(1, ge=0)  # at least this many heads of each type (closest heads are flipped)
    seed: int = 0


class EarlyStopSettings(Settings):
    """Stop a tuning stage once its loss stops falling: every `window` steps the window's mean loss (the motion
    loss in stage 3, the flow-matching loss in stage 2) is compared with the best window so far; `patience`
    windows in a row that are not `min_improvement` (relative) below it end the stage."""

    window: int = Field(100, ge=1)
    patience: int = Field(3, ge=1)
    min_improvement: float = Field(0.01, ge=0, lt=1)


class TrainSettings(Settings):
    steps: int = Field(ge=0)
    lr: float = Field(1e-4, gt=0)
    rank: int = Field(16, ge=1)
    alpha: float | None = None  # LoRA alpha; None = rank (scale 1)
    weight_decay: float = Field(0.1, ge=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    # the learning rate after warmup: held, or decayed along a cosine or a line to 0 after the last step
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    grad_checkpointing: bool = False
    mixed_precision: Literal["no", "bf16"] = "no"  # autocast; bf16 needs no loss scaling
    max_grad_norm: float | None = 1.0
    timestep_weighting: Literal["uniform", "logit_normal"] = "uniform"
    timestep_shift: float | None = Field(None, gt=0)  # None: the model's sampler shift (Wan: flow_shift)
    include_out: bool = True  # also LoRA the output projection's columns of the selected heads
    checkpoint_every: int = Field(100, ge=1)
    early_stop: EarlyStopSettings | None = None  # stop on a loss plateau (method/early_stop.py); None: run all steps
    # Models with a high- and a low-noise expert (Wan2.2-A14B): tune a LoRA for each (each on its own noise
    # levels, `steps` each), or for the high-noise one only, where layout and motion are decided.
    experts: Literal["all", "high_noise"] = "all"
    # With several processes: "ddp" replicates the model; "fsdp" shards the frozen base model (FSDP2) and
    # keeps the LoRA replicated, for models too large for one device.
    distributed: Literal["ddp", "fsdp"] = "ddp"
    seed: int = 0

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


class SpatialSettings(TrainSettings):
    steps: int = Field(3000, ge=0)


class MotionSettings(TrainSettings):
    steps: int = Field(2000, ge=0)
    weight_decay: float = Field(0.5, ge=0)
    keep_frames: int | None = Field(5, ge=1)  # K latent frames per step (sparse motion sampling); None = all
    sampling: Sampling = "uniform-random-phase"
    rope: RopeMode = "index"
    # tune on the clip shrunk this many times per side, its tokens at the full size's RoPE spacing (motion is
    # low-frequency); 1 = the full size
    downsample: int = Field(1, ge=1)
    motion_loss: MotionLossForm = "paper"
    motion_weight: float = Field(1.0, ge=0)


class GenerateSettings(Settings):
    negative_prompt: str = ""
    motion_scale: float = 1.0
    spatial_scale: float = 0.0  # the spatial LoRA holds the reference's appearance: off by default
    seed: int = 0
    steps: int = Field(50, ge=1)
    guidance: float = Field(5.0, ge=0)
    guidance_2: float | None = Field(None, ge=0)  # the low-noise expert's (Wan2.2-A14B); None: `guidance`
    image: str | None = None  # image-to-video models: the picture to animate (its first frame)
    frames: int | None = None  # None: the reference's frame count and size
    height: int | None = None
    width: int | None = None


class DiTFlowSettings(Settings):
    """DiTFlow's attention motion flow guidance (method/guidance.py). Defaults: the authors' release for CogVideoX
    (configs/guidance_config.yaml) unless marked; docs/method.md gives each source."""

    block: int | None = Field(None, ge=0)  # the layer whose q/k give the AMF; None: the middle one (release: 20 of 42)
    guided_fraction: float = Field(0.2, ge=0, le=1)  # the first denoising steps guided (release: 50 -> 40 of 50)
    inner_steps: int = Field(5, ge=1)  # optimiser steps on the latent per guided denoising step
    lr: tuple[float, float] = (0.002, 0.001)  # Adam's rate, linear from the first guided step to the last
    temperature: float = Field(2.0, gt=0)  # softmax(temperature * head-averaged scores) per frame pair
    reference_sigma: float = Field(0.0, ge=0, le=1)  # noise level of the reference's capture pass (release: clean)
    hard_reference: bool = True  # the reference's AMF from the argmax match (release), not the softmax expectation
    query_chunk: int = Field(1024, ge=1)  # query tokens per chunk: memory O(chunk x tokens) per frame pair set
    # What the Adam steps move: the latent (release: `--opt_mode latent`, its default) or the video tokens' rotary
    # tables (release: `--opt_mode emb`, "rope" on CogVideoX-5B), kept per guided step in a file for other prompts
    optimise: Literal["latent", "positions"] = "latent"
    # A file an earlier `optimise: positions` run wrote: its tables are injected, nothing optimised (release:
    # `--inject_embeds`); needs `optimise: positions`
    positions_from: str | None = None

    @model_validator(mode="after")
    def _positive_rates(self) -> DiTFlowSettings:
        if min(self.lr) <= 0:
            raise ValueError(f"lr must be two positive rates (first, last guided step), got {list(self.lr)}")
        if self.positions_from is not None and self.optimise != "positions":
            raise ValueError("positions_from injects optimised positions: set optimise: positions with it")
        return self


class FlowGuidanceSettings(Settings):
    """Flow-guided sampling after FlowMotion (method/guidance.py): the predicted clean latents' frame differences
    aligned with the reference's. The paper's exact constants are not public here: these are ours (docs/method.md)."""

    guided_fraction: float = Field(0.2, ge=0, le=1)  # the first denoising steps guided
    inner_steps: int = Field(3, ge=1)  # Adam steps on the latent per guided denoising step
    lr: float = Field(0.05, gt=0)
    difference_weight: float = Field(1.0, ge=0)  # frame-to-frame differences of the predicted x0
    x0_weight: float = Field(0.0, ge=0)  # the predicted x0 itself (copies the reference's layout and appearance)
    momentum: float = Field(0.9, ge=0, lt=1)  # running average of the velocity over the guided steps
    orthogonal_scale: float = Field(0.5, ge=0, le=1)  # what is kept of the velocity orthogonal to that average

    @model_validator(mode="after")
    def _some_loss(self) -> FlowGuidanceSettings:
        if self.difference_weight == 0 and self.x0_weight == 0:
            raise ValueError("difference_weight and x0_weight are both 0: the guidance would have nothing to align")
        return self


class GuidanceSettings(Settings):
    """A training-free guidance while sampling: alone (no LoRA: `fym guide`) or over a tuned motion LoRA."""

    method: GuidanceMethod = "none"
    ditflow: DiTFlowSettings = DiTFlowSettings()
    flow: FlowGuidanceSettings = FlowGuidanceSettings()


class TransferConfig(Settings):
    reference: str = ""
    prompt: str = ""  # caption of the reference, used while tuning
    target_prompt: str | None = None  # the new content; None = `prompt`
    model: ModelSettings = ModelSettings()
    video: VideoSettings = VideoSettings()
    heads: HeadSettings = HeadSettings()
    spatial: SpatialSettings = SpatialSettings()
    motion: MotionSettings = MotionSettings()
    generate: GenerateSettings = GenerateSettings()
    guidance: GuidanceSettings = GuidanceSettings()

    def check_block_swap(self) -> None:
        """Refuse `model.blocks_to_swap` for a stage that tunes without gradient checkpointing, whose backward would
        keep every block's device weights alive: swapping would save nothing. (A check of the whole run's config,
        recipe merged, not of a config file alone.)"""
        tuned = [name for name in ("spatial", "motion")
                 if getattr(self, name).steps and not getattr(self, name).grad_checkpointing]
        if self.model.blocks_to_swap and tuned:
            raise InputError(f"model.blocks_to_swap needs gradient checkpointing to save memory while tuning: set "
                             f"{', '.join(f'{name}.grad_checkpointing: true' for name in tuned)}")

    def save(self, path: Path) -> None:
        from .runs import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> TransferConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
            return cls.model_validate(data)
        except ValidationError as err:
            raise InputError(f"{path}: invalid config ({describe_validation_error(err)})") from err
        except (OSError, yaml.YAMLError) as err:
            raise InputError(f"{path}: invalid config ({str(err).splitlines()[0]})") from err


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors as one line: `section.key: message; ...`."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
