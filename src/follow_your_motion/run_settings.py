"""A run's settings, checked before anything is tuned: against the run directory they go into (a run never mixes
artifacts of different settings) and against the model they tune (what it can take). Nothing here loads a
model, so reports and the app can read run settings cheaply."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from accelerate import PartialState

from .config import TransferConfig
from .errors import InputError
from .runs import RunDir

if TYPE_CHECKING:  # importing the backbones loads the model libraries
    from .backbones.base import Backbone

# Settings that do not change what tuning produces; a run may be reused with different values
# (e.g. tuned on a GPU, generated from on a laptop).
UNTUNED = {"generate": True, "target_prompt": True, "guidance": True,
           "model": {"device", "offload", "attention_backend", "keep_encoders", "compile"}}


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as {"section.key": value}."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_run_config(run: RunDir, cfg: TransferConfig) -> None:
    """Refuse to mix artifacts of different settings in one run directory; write config.yaml if new."""
    if run.config.exists():
        old = flatten(TransferConfig.load(run.config).model_dump(exclude=UNTUNED))
        new = flatten(cfg.model_dump(exclude=UNTUNED))
        diffs = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in new.items() if old.get(key) != value]
        if diffs:
            raise InputError(
                f"{run.root} holds a run made with other settings ({'; '.join(diffs[:3])}); "
                "use another --out or delete it"
            )
    elif PartialState().is_main_process:
        cfg.save(run.config)


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


def first_frame_condition(backbone: Backbone, cfg: TransferConfig) -> bool:
    """Whether tuning conditions on the reference's first frame: always for an image-to-video model, never for
    a text-to-video one, and for one that does both (Wan2.2-TI2V) when the run animates a picture (--image)."""
    given = cfg.video.first_frame_condition
    wanted = {"required": True, "none": False}.get(backbone.image_mode, cfg.generate.image is not None)
    if given is not None and given != wanted and backbone.image_mode != "optional":
        raise InputError(f"video.first_frame_condition: {given} is not possible with this model (image mode "
                         f"{backbone.image_mode!r})")
    return wanted if given is None else given


def open_config(run: Path) -> TransferConfig:
    """The config.yaml of an existing run directory (a clear error if `run` is not one)."""
    if not (Path(run) / "config.yaml").is_file():
        raise InputError(f"{run}: not a run directory (no config.yaml)")
    return TransferConfig.load(Path(run) / "config.yaml")
