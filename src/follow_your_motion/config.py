"""Settings of every stage, validated with pydantic, saved as YAML, with per-backbone recipes.

A run directory's `config.yaml` is the complete record of what produced its artifacts; loading it and
running again reproduces them.
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

    @model_validator(mode="after")
    def _positive_rates(self) -> DiTFlowSettings:
        if min(self.lr) <= 0:
            raise ValueError(f"lr must be two positive rates (first, last guided step), got {list(self.lr)}")
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


def merge(base: dict, override: dict) -> dict:
    """Recursive dict update: `override` wins, nested sections merge."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# The paper's tuning (rank 128, ~3000 / ~2000 steps) in bf16 with gradient checkpointing, for the real models; each
# family's recipe adds its frames, size, K and sampler.
PAPER_TUNING: dict[str, dict] = {
    "model": {"dtype": "bfloat16"},
    "spatial": {"rank": 128, "steps": 3000, "grad_checkpointing": True, "mixed_precision": "bf16"},
    "motion": {"rank": 128, "steps": 2000, "grad_checkpointing": True, "mixed_precision": "bf16"},
}

# What a variant's 720P checkpoint and its image-to-video sibling share (the RECIPES entries say where from).
WAN21_I2V: dict = {"generate": {"steps": 40, "guidance": 5.0}}
SKYREELS_I2V: dict = {"generate": {"guidance": 5.0}}
SKYREELS_720P: dict = {"video": {"auto_frames": 121, "auto_size": (720, 1280), "fps": 24.0},
                       "motion": {"keep_frames": 7}}

# Per-backbone defaults; a user's explicit settings override them.
RECIPES: dict[str, dict] = {
    # The paper's settings where known (81 frames at 480x832, K=5 latent frames), the release's optimiser (AdamW
    # 1e-4, weight decay 0.1 / 0.5), Wan's sampler defaults. 16 fps: the rate Wan2.1 and Wan2.2-A14B generate at
    # (their releases' sample_fps), so the reference's motion is learnt at the speed the model will play it.
    "wan": merge(PAPER_TUNING, {
        "video": {"auto_frames": 81, "auto_size": (480, 832), "fps": 16.0},
        "motion": {"keep_frames": 5},
        "generate": {"steps": 50, "guidance": 5.0},
    }),
    # Wan2.2-T2V-A14B on top of "wan" (the Wan2.2 release's t2v-A14B config: 40 sampling steps, guidance 4.0 for
    # the high-noise and 3.0 for the low-noise expert, 81 frames; it samples 480P and 720P, the 480P size is kept).
    "wan2.2-t2v-a14b": {"generate": {"steps": 40, "guidance": 4.0, "guidance_2": 3.0}},
    # Wan2.2-TI2V-5B on top of "wan" (the release's ti2v-5B config: 121 frames of 704x1280 at 24 fps, 50 steps,
    # guidance 5.0).
    "wan2.2-ti2v-5b": {"video": {"auto_frames": 121, "auto_size": (704, 1280), "fps": 24.0},
                       "generate": {"steps": 50, "guidance": 5.0}},
    # Wan2.1-I2V-14B on top of "wan" (the Wan2.1 release's i2v-14B config: 40 sampling steps, guidance 5.0).
    "wan2.1-i2v": WAN21_I2V,
    # Wan2.1-I2V-14B-720P on top of "wan" and "wan2.1-i2v": 81 frames of 720x1280 (the Wan2.1 README's command for
    # the 720P checkpoint: --task i2v-14B --size 1280*720).
    "wan2.1-i2v-720p": merge(WAN21_I2V, {"video": {"auto_size": (720, 1280)}}),
    # Wan2.2-I2V-A14B on top of "wan" (the Wan2.2 release's i2v-A14B config: 40 steps, guidance 3.5 for both
    # experts).
    "wan2.2-i2v-a14b": {"generate": {"steps": 40, "guidance": 3.5, "guidance_2": 3.5}},
    # LTX-Video 0.9.x (backbones/ltx.py). bf16: the dtype diffusers' LTX-Video docs recommend. 161 frames of
    # 512x704 at 25 fps: LTXPipeline.__call__'s defaults (num_frames, height, width, frame_rate; the RoPE's time
    # axis assumes the frame rate); 161 frames are 21 latent frames, as Wan's 81, so K = 5 keeps the paper's
    # ratio. Rank, steps and K: the paper's, as for Wan. Training noise levels are shifted by the sampler's
    # shift at this size (LTXBackbone.flow_shift). 50 steps, guidance 3: LTXPipeline.__call__'s defaults.
    "ltx": merge(PAPER_TUNING, {
        "video": {"auto_frames": 161, "auto_size": (512, 704), "fps": 25.0},
        "motion": {"keep_frames": 5},
        "generate": {"steps": 50, "guidance": 3.0},
    }),
    # CogVideoX (backbones/cogvideox.py), for CogVideoX-5B (and 2B). bf16: the model card's precision for 5B.
    # 49 frames of 480x720 at 8 fps: the model cards ("6 seconds, 8 frames per second, 720 x 480") and
    # CogVideoXPipeline.__call__'s defaults (the transformer's sample_frames 49, sample_height/width 60/90 latent
    # cells). 49 frames are 13 latent frames: K = 3 keeps the paper's ratio (5 of Wan's 21). Rank and steps: the
    # paper's, as for Wan. 50 steps, guidance 6: CogVideoXPipeline.__call__'s defaults (num_inference_steps,
    # guidance_scale), as in the model card's example.
    "cogvideox": merge(PAPER_TUNING, {
        "video": {"auto_frames": 49, "auto_size": (480, 720), "fps": 8.0},
        "motion": {"keep_frames": 3},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # CogVideoX1.5-5B on top of "cogvideox": 81 frames of 768x1360 at 16 fps (its model card: 1360x768, 16 fps;
    # CogVideoXPipeline's 81-frame default for 1.5); K = 3 of its 11 token frames (a token: two latent frames).
    "cogvideox1.5": {"video": {"auto_frames": 81, "auto_size": (768, 1360), "fps": 16.0}, "motion": {"keep_frames": 3}},
    # HunyuanVideo 1.5 (backbones/hunyuan_video15.py), for the 480p text-to-video checkpoint. bf16: the released
    # weights' dtype. 121 frames: HunyuanVideo15Pipeline.__call__'s default num_frames (5 s at the release's 24 fps);
    # 480x848: the release's 480p size (848x480, a multiple of the VAE's 16). 121 frames are 31 latent frames, so
    # K = 7 keeps the paper's ratio (5 of Wan's 21). Rank and steps: the paper's, as for Wan. 50 steps:
    # HunyuanVideo15Pipeline.__call__'s default num_inference_steps; guidance 6: the release's CFG scale for
    # text-to-video (its guider's guidance_scale). Training noise levels are shifted by the scheduler's `shift`.
    "hunyuan_video15": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (480, 848), "fps": 24.0},
        "motion": {"keep_frames": 7},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # SkyReels-V2 (backbones/skyreels_v2.py), for the 540P text-to-video checkpoints. bf16: as Wan. 97 frames of
    # 544x960 at 24 fps, guidance 6.0: the SkyworkAI/SkyReels-V2 README's text-to-video command for
    # SkyReels-V2-T2V-14B-540P (--height 544 --width 960 --num_frames 97 --guidance_scale 6.0 --shift 8.0 --fps 24;
    # the shift is set on the sampler, SkyReelsV2Backbone), also SkyReelsV2Pipeline.__call__'s defaults. 50 steps:
    # SkyReelsV2Pipeline.__call__'s default num_inference_steps. 97 frames are 25 latent frames, so K = 6 keeps the
    # paper's ratio (5 of Wan's 21). Rank and steps: the paper's, as for Wan.
    "skyreels_v2": merge(PAPER_TUNING, {
        "video": {"auto_frames": 97, "auto_size": (544, 960), "fps": 24.0},
        "motion": {"keep_frames": 6},
        "generate": {"steps": 50, "guidance": 6.0},
    }),
    # SkyReels-V2 image-to-video on top of "skyreels_v2": guidance 5.0 (SkyReelsV2ImageToVideoPipeline.__call__'s
    # default and diffusers' example, "6.0 for T2V, 5.0 for I2V").
    "skyreels-v2-i2v": SKYREELS_I2V,
    # The 720P checkpoints on top of "skyreels_v2" (and "skyreels-v2-i2v"): 121 frames of 720x1280 at 24 fps, the
    # SkyworkAI/SkyReels-V2 README's model table ("720 * 1280 * 121f") and its --num_frames advice ("121 for
    # 720P"). 121 frames are 31 latent frames, so K = 7 keeps the paper's ratio, as for HunyuanVideo 1.5.
    "skyreels-v2-720p": SKYREELS_720P,
    "skyreels-v2-i2v-720p": merge(SKYREELS_I2V, SKYREELS_720P),
    # Kandinsky 5 T2V Lite (backbones/kandinsky5.py), for the 5-second checkpoints. bf16: diffusers' example's dtype.
    # 121 frames of 512x768 at 24 fps, 50 steps, guidance 5.0: Kandinsky5T2VPipeline.__call__'s defaults and its
    # example (height 512, width 768, num_frames 121, guidance_scale 5.0, exported at fps 24), also the release's
    # ComfyUI workflow ("768x512x121 for 5s"). 121 frames are 31 latent frames, so K = 7 keeps the paper's ratio (5
    # of Wan's 21). Rank and steps: the paper's, as for Wan. Training noise levels are shifted by the scheduler's
    # `shift` (Kandinsky5Backbone.flow_shift).
    "kandinsky5": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (512, 768), "fps": 24.0},
        "motion": {"keep_frames": 7},
        "generate": {"steps": 50, "guidance": 5.0},
    }),
    # LTX-2 (backbones/ltx2.py), text- and image-to-video. bf16: diffusers' LTX-2 example's dtype. 121 frames of
    # 512x768 at 24 fps, 30 steps, guidance 3.0: LTX2Pipeline.__call__'s defaults (num_frames where it has no duration
    # head, height, width, frame_rate, num_inference_steps, guidance_scale) and diffusers' example (the same values;
    # the RoPE's time axis assumes the frame rate). 121 frames are 16 latent frames, so K = 4 keeps the paper's ratio
    # (5 of Wan's 21). Rank and steps: the paper's, as for Wan. Training noise levels are shifted by the sampler's
    # shift at this size (LTX2Backbone.flow_shift).
    "ltx2": merge(PAPER_TUNING, {
        "video": {"auto_frames": 121, "auto_size": (512, 768), "fps": 24.0},
        "motion": {"keep_frames": 4},
        "generate": {"steps": 30, "guidance": 3.0},
    }),
    # The embedded ShapesWorld model: 9 frames of 32x32 pixels, seconds per stage on a CPU. It has no frame rate (its
    # training videos have none), so its frames are spread over the whole clip.
    "toy": {
        "video": {"auto_frames": 9, "auto_size": (32, 32)},
        "heads": {"num_queries": 256},
        "spatial": {"rank": 8, "steps": 100, "lr": 1e-3, "checkpoint_every": 50},
        "motion": {"rank": 8, "steps": 600, "lr": 1e-3, "keep_frames": 5, "checkpoint_every": 100},
        "generate": {"steps": 20, "guidance": 3.0},
        # The guidances act on pixels here, not on a VAE's latents: DiTFlow's release rates (0.002 -> 0.001, made for
        # CogVideoX's latents) leave the toy's samples unchanged, ten times them over half the steps moves the
        # object along the reference's path (docs/benchmark.md, "Training-free guidance on the toy model").
        "guidance": {"ditflow": {"lr": (0.02, 0.01), "guided_fraction": 0.5}},
    },
}


def recipe_config(family: str, overrides: dict) -> TransferConfig:
    """The family's recipe with the user's overrides applied."""
    return TransferConfig.model_validate(merge(RECIPES.get(family, {}), overrides))


def model_family(model: dict) -> str:
    """The family of a `model` section: its `family`, or the one its `source` is (None: the toy). A hub id the
    registry refuses by name is refused whatever family is given, before anything is downloaded."""
    family = model.get("family", "auto")
    if model.get("source") is None:
        return "toy" if family == "auto" else family
    from .backbones import detect_family, hub_variant  # read model_index.json and the registry only

    hub_variant(model["source"])
    return detect_family(model["source"]) if family == "auto" else family


def model_recipe(model: dict) -> dict:
    """The recipe of a `model` section: its family's, with its variant's on top (Wan2.2, Wan I2V, CogVideoX1.5)."""
    recipe: dict = {}
    for name in recipe_names(model):
        recipe = merge(recipe, RECIPES.get(name, {}))
    return recipe


def recipe_names(model: dict) -> list[str]:
    """The recipes a `model` section runs with, in the order they apply: its family's, then its variant's."""
    from .backbones import detect_variant

    variant = detect_variant(model["source"]) if model.get("source") is not None else None
    return [model_family(model)] + ([variant] if variant in RECIPES else [])


def describe_choice(cfg: TransferConfig) -> str:
    """One line saying which family and recipe a run uses, printed before any model is loaded."""
    v, g = cfg.video, cfg.generate
    frames, height, width = v.target()
    recipes = " + ".join(recipe_names(cfg.model.model_dump()))
    return (f"model {cfg.model.source}: family {cfg.model.family}, recipe {recipes}"
            f" ({frames} frames of {height}x{width}, {g.steps} sampling steps, guidance {g.guidance})")


def _absolute_paths(data: dict) -> dict:
    """The reference, the image to animate, and a model source that is a local path, made absolute, so a run's
    config.yaml means the same files from any working directory."""
    data = dict(data)
    if data.get("reference"):
        data["reference"] = str(Path(data["reference"]).expanduser().resolve())
    source = (data.get("model") or {}).get("source")
    if source and Path(source).expanduser().exists():
        data["model"] = {**data["model"], "source": str(Path(source).expanduser().resolve())}
    image = (data.get("generate") or {}).get("image")
    if image:
        data["generate"] = {**data["generate"], "image": str(Path(image).expanduser().resolve())}
    return data


def load_yaml_settings(path: Path) -> dict:
    """The settings a YAML file gives (only those it names), validated; a clear InputError otherwise."""
    return TransferConfig.load(path).model_dump(exclude_unset=True)


def resolve_config(flags: dict | None = None, yaml_file: Path | None = None, settings: dict | None = None
                   ) -> TransferConfig:
    """The one settings precedence of the CLI, the benchmark and the Python API: the model family's recipe <
    `settings` (a dict of sections, e.g. a benchmark's overrides) < the YAML file < `flags` (only the options
    the user actually gave). The family comes from the merged `model` section, so a YAML can choose the model; it
    is written into the result's `model.family`."""
    user = merge(settings or {}, load_yaml_settings(yaml_file) if yaml_file is not None else {})
    user = _absolute_paths(merge(user, flags or {}))
    model = user.get("model") or {}
    recipe = model_recipe(model)
    # the family is recorded, so a run's config.yaml names its family even once its model directory is gone
    user = merge(user, {"model": {"family": model_family(model)}})
    try:
        return TransferConfig.model_validate(merge(recipe, user))
    except ValidationError as err:
        raise InputError(f"invalid settings: {describe_validation_error(err)}") from err


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors as one line: `section.key: message; ...`."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
