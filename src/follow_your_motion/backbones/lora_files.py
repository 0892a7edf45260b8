"""LoRA files in the two formats users load them in, as every diffusers family reads and writes them: diffusers'
(`transformer.<module>.lora_A.weight`, the adapter config as JSON in the metadata) and ComfyUI's native one
(`diffusion_model.<its module>.lora_A.weight` and `.alpha`, rank and alpha carried by the tensors).

The families differ only in how a ComfyUI module is named; that stays in each family file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import InputError
from ..runs import atomic_save_tensors
from .base import second_adapter_allowed

PREFIX = "transformer"  # diffusers' key prefix of a transformer's LoRA weights and adapter config
LORA_METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights puts the adapter config
COMFY_PREFIX = "diffusion_model."  # ComfyUI's prefix of the diffusion model's weights


def write_diffusers_lora(path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """diffusers' layout, as `save_lora_weights` writes it: `transformer.<module>.lora_A.weight` and the adapter
    config under `lora_adapter_metadata` with `transformer.` keys, which a transformer's
    `load_lora_adapter(path, use_safetensors=True)` reads (for a pipeline with no `save_lora_weights`)."""
    config = {f"{PREFIX}.{key}": sorted(value) if isinstance(value, set) else value for key, value in metadata.items()}
    atomic_save_tensors(Path(path), {f"{PREFIX}.{key}": value for key, value in state_dict.items()},
                        {"format": "pt", LORA_METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)})


@contextlib.contextmanager
def loading_lora(path: str, what: str) -> Iterator[None]:
    """A block that loads a LoRA file into a model: a second adapter joins without PEFT's warning, and whatever
    diffusers or PEFT cannot load is refused in one line naming the file and `what` ("a Wan LoRA")."""
    try:
        with second_adapter_allowed():
            yield
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"{path}: cannot load as {what} ({str(err).splitlines()[0]})") from err


def lora_file_keys(path: str) -> list[str]:
    """The tensor names in a LoRA file, refusing a missing file or one that is not safetensors."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: cannot read as a LoRA file ({str(err).splitlines()[0]})") from err


def is_comfyui_lora(keys: list[str]) -> bool:
    """Whether a LoRA file's tensor names are ComfyUI's native ones."""
    return any(key.startswith(COMFY_PREFIX) for key in keys)


def comfyui_to_peft(state: dict[str, torch.Tensor], rename: Callable[[dict], dict[str, torch.Tensor]],
                    missing_alpha_is_rank: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """A ComfyUI-native LoRA as PEFT names relative to the transformer (`rename` maps its weights, `.alpha` keys
    left out, to `<module>.lora_A.weight` etc.) and the adapter config they need: its one rank and one alpha as
    `r` and `lora_alpha` (diffusers' loaders refuse `.alpha` keys). Without alpha keys the alpha is the rank where
    `missing_alpha_is_rank` (as ComfyUI reads such a file), a refusal otherwise."""
    alphas = {float(value) for key, value in state.items() if key.endswith(".alpha")}
    converted = rename({key: value for key, value in state.items() if not key.endswith(".alpha")})
    ranks = {value.shape[0] for key, value in converted.items() if key.endswith(".lora_A.weight")}
    if len(ranks) != 1 or len(alphas) > 1 or not (alphas or missing_alpha_is_rank):
        raise InputError(f"a ComfyUI LoRA needs one rank and one alpha for all modules (ranks {sorted(ranks)}, "
                         f"alphas {sorted(alphas)})")
    rank = ranks.pop()
    modules = sorted({key.rsplit(".lora_", 1)[0] for key in converted})
    return converted, {"r": rank, "lora_alpha": alphas.pop() if alphas else float(rank), "target_modules": modules}
