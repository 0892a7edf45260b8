"""What every `fym` command shares: option types, and how a command's failure reaches the user."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .errors import InputError

Reference = Annotated[Path, typer.Argument(help="reference video (the motion)")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="caption of the reference, used while tuning")]
Out = Annotated[Path, typer.Option("--out", "-o", help="run directory")]
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="hub id or local diffusers directory; default: the toy model")
]
Family = Annotated[str | None, typer.Option(
    help="the model family of a checkpoint the registry does not list: wan, ltx, cogvideox, hunyuan_video15, "
         "skyreels_v2, kandinsky5, ltx2 "
         "(model.family; default: told by the model)")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML with any settings to override")]
Steps = Annotated[int | None, typer.Option(help="override the training steps of the stage(s)")]
SpatialSteps = Annotated[int | None, typer.Option(help="steps of stage 2, the spatial (appearance) LoRA on single "
                                                       "frames; 0 skips it (default: the recipe's)")]
MotionSteps = Annotated[int | None, typer.Option(help="steps of stage 3, the motion LoRA on the clip's sparse frames; "
                                                      "0 generates with the untuned model (default: the recipe's)")]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps, ... (default auto: CUDA, then Apple "
                                                "MPS, else the CPU)")]
AutoDevice = Annotated[str, typer.Option(help="auto (CUDA, then Apple MPS, else the CPU), cpu, cuda, cuda:1, ...")]
RunOpt = Annotated[Path, typer.Option("--run", "-r", help="an existing run directory")]
Frames = Annotated[int | None, typer.Option(min=1, help="pixel frames to tune on (default: the recipe's, or the "
                                                        "most the clip has)")]
Size = Annotated[str | None, typer.Option(help="HxW to tune at, e.g. 832x480 (default: the recipe's pixel count "
                                               "at the clip's shape)")]
Side = Annotated[int | None, typer.Option(min=1, help="with --width / --height: the size to tune at")]
Fps = Annotated[float | None, typer.Option(help="take the frames at this rate (default: the model's, e.g. Wan 16; "
                                                "a longer clip is cut to that window)")]
Start = Annotated[float | None, typer.Option(min=0, help="seconds into the clip where the frames start")]
Image = Annotated[Path | None, typer.Option(help="image-to-video models: the picture to animate with the motion")]
KeepEncoders = Annotated[bool | None, typer.Option(
    "--keep-encoders", help="keep the text encoder(s) and VAE on the device while tuning (model.keep_encoders; "
                            "default: they wait on the CPU once the reference is encoded)")]
Compile = Annotated[bool | None, typer.Option(
    "--compile", help="torch.compile the transformer blocks for tuning and generation (model.compile)")]

MEMORY_HINT = ("out of memory: try --config with spatial/motion grad_checkpointing: true and mixed_precision: bf16, "
               "model.offload: true or model.blocks_to_swap: N, fewer motion.keep_frames, a smaller --size or fewer "
               "--frames")
debug = {"on": False}


Clip = Annotated[str | None, typer.Option(help="CLIP model (a directory, or a hub id already in the HF cache): "
                                                "text similarity and CLIP temporal consistency")]
Dino = Annotated[str | None, typer.Option(help="DINO / DINOv2 model (a directory or a cached hub id): DINO "
                                                "temporal consistency (DeT's definition)")]


class NoteHandler(logging.Handler):
    """The package's notes (e.g. the frame count chosen for a short clip) as one `note:` line each on the
    current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"note: {record.getMessage()}", err=True)


def fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def handle_errors(action) -> None:
    """Run `action`; bad input (an InputError, a file that cannot be read or written) becomes one clear line on
    stderr and exit code 2, unless --debug. Anything else is a bug or a resource problem: it keeps its traceback
    (out of memory gets one more line naming the memory options)."""
    import torch

    try:
        action()
    except (InputError, OSError) as err:
        if debug["on"]:
            raise
        fail(err)
    except torch.OutOfMemoryError:
        typer.echo(f"error: {MEMORY_HINT}", err=True)
        raise
