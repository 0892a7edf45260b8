"""What each tuning stage is given besides the reference: the experts it tunes, its LoRA and noise shift and, for
image-to-video, the conditions its clips and single frames are tuned with.

Shared by the job (`transfer.py`, `reference_encodings.py`) and its trace at real size (`plan_trace.py`), so the
plan tunes the same experts on the same conditions as a run.
"""

from __future__ import annotations

import numpy as np

from .backbones.base import Backbone
from .backbones.experts import Expert
from .backbones.inputs import Conditioning
from .config import TrainSettings, TransferConfig, VideoSettings
from .method.lora import add_masked_lora


def stage_experts(backbone: Backbone, settings: TrainSettings) -> list[Expert]:
    """The experts a LoRA stage tunes: all, or the high-noise one only (`experts: high_noise`)."""
    return [e for e in backbone.experts if settings.experts == "all" or e.name != "low_noise"]


def stage_settings(backbone: Backbone, settings: TrainSettings, video: VideoSettings) -> TrainSettings:
    """The stage's settings as it trains: without a `timestep_shift` of its own, the sampler's shift for the run's
    clip, as it will generate it."""
    if settings.timestep_shift is not None:
        return settings
    return settings.model_copy(update={"timestep_shift": backbone.clip_shift(video.frames, video.height,
                                                                             video.width)})


def add_stage_adapter(backbone: Backbone, expert: Expert, adapter: str, selection: dict[int, list[int]],
                      settings: TrainSettings) -> None:
    """Give `expert` the stage's head-masked LoRA on `selection` (layer -> heads), unless an earlier, stopped call
    made it (its masks still hold), and make it the one trained: stage 3 runs with the spatial LoRA on, frozen."""
    if adapter not in expert.loaded_adapters():
        add_masked_lora(expert, adapter, selection, settings.rank, settings.lora_alpha, settings.include_out,
                        seed=settings.seed)
    frozen = {"spatial": 1.0} if "spatial" in expert.loaded_adapters() and adapter != "spatial" else {}
    backbone.set_active_adapters(frozen | {adapter: 1.0})


def clip_condition(backbone: Backbone, frames: np.ndarray, num_frames: int) -> Conditioning:
    """Image-to-video: the condition a clip (T, H, W, 3) is tuned with, its own first frame at its size (the
    reference's, or stage 3's shrunk copy of it)."""
    height, width = frames.shape[1:3]
    return backbone.encode_image(frames[0], num_frames, height, width)


def conditions_own_frames(cfg: TransferConfig, cond: Conditioning) -> bool:
    """Whether stage 2 conditions each single frame on itself (`own_first_frame`): image-to-video, unless the first
    frame is given clean (TI2V: a one-frame clip would have no frame left to learn, so its single frames are learnt
    unconditioned, as its text-to-video mode runs)."""
    return cfg.video.first_frame_condition and not cond.fixed_frames


def own_first_frame(backbone: Backbone, frame: np.ndarray) -> Conditioning:
    """Stage 2, image-to-video: a single frame (H, W, 3)'s conditioning as its own first frame, how the model sees a
    one-frame clip of it."""
    height, width = frame.shape[:2]
    return backbone.encode_image(frame, 1, height, width)

