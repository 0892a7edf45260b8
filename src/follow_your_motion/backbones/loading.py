"""A backbone's diffusers pipeline: loading it (a hub id or a `save_pretrained` directory, with clear errors) and
writing LoRA files the way its `load_lora_weights` reads them.

Every family does both the same way; only the pipeline classes it accepts and whether its VAE stays in float32
differ.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from ..errors import InputError
from ..progress import announced, bar_options
from .from_configs import CONFIGS_ONLY, pipeline_from_configs


class ModelLoadError(InputError):
    """The model source could not be loaded; the message says which and why."""


def load_pipeline(source: str, dtype: torch.dtype, kinds: tuple[type, ...], what: str,
                  vae_float32: bool = True) -> DiffusionPipeline:
    """The pipeline at `source`, which must be one of `kinds` (`what` names them for the error). With
    `vae_float32` the VAE stays float32 whatever `dtype` is (latents are encoded once and cached, and video VAEs
    are fragile in half precision)."""
    dtypes = {"default": dtype, "vae": torch.float32} if vae_float32 else dtype
    configs = CONFIGS_ONLY.get()  # `fym plan`: the same pipeline, built from configs without weights
    pipe = _from_pretrained(source, dtypes) if configs is None else pipeline_from_configs(*configs, dtypes)
    if not isinstance(pipe, kinds):
        raise ModelLoadError(f"model {source!r} is a {type(pipe).__name__}, not {what}")
    return pipe


def _from_pretrained(source: str, dtypes: dict[str, torch.dtype] | torch.dtype) -> DiffusionPipeline:
    """`DiffusionPipeline.from_pretrained` of a hub id or a local directory, its failures as one clear line."""
    path = Path(source).expanduser()
    looks_local = path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local and not (path / "model_index.json").is_file():
        raise ModelLoadError(
            f"model {source!r}: not a diffusers pipeline directory (no model_index.json) and not a hub id"
        )
    try:
        with announced(f"load the model ({source})"), component_bars(not bar_options()):
            return DiffusionPipeline.from_pretrained(str(path) if looks_local else source, dtype=dtypes)
    except (OSError, ValueError, RuntimeError) as err:  # missing files, bad weights, offline hub
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"model {source!r} could not be loaded: {first}") from err


@contextlib.contextmanager
def component_bars(shown: bool) -> Iterator[None]:
    """diffusers' and transformers' per-component loading bars on (a terminal) or off (a log, where each refresh
    would be a line: the one `load the model` line stands for them) for a block."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    before = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        (lib.enable_progress_bar if shown else lib.disable_progress_bar)()
    try:
        yield
    finally:
        for lib, enabled in zip(libraries, before, strict=True):
            (lib.enable_progress_bar if enabled else lib.disable_progress_bar)()


def save_pipeline_lora(pipeline: type, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write one transformer's LoRA through `pipeline.save_lora_weights` (diffusers' keys and the adapter config
    in the metadata), into a temporary folder beside `path` and then renamed onto it."""
    target = Path(path)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        pipeline.save_lora_weights(tmp, transformer_lora_layers=state_dict, weight_name=target.name,
                                   transformer_lora_adapter_metadata=metadata)
        os.replace(Path(tmp) / target.name, target)


def keep_file_values(module: torch.nn.Module, adapter: str, state: dict[str, torch.Tensor]) -> None:
    """Put a loaded adapter's weights back to the file's exact float32 values (`state`: diffusers' keys,
    `transformer.<module>.lora_A.weight`): diffusers creates the adapter in the model's dtype, and a reloaded
    LoRA must compute what the trained one did (and can keep training)."""
    for name, param in module.named_parameters():
        if ".lora_" in name and name.endswith(f".{adapter}.weight"):
            key = "transformer." + name.removesuffix(f".{adapter}.weight") + ".weight"
            param.data = state[key].to(param.device, torch.float32).clone()
