"""LoRA files users can load without us: diffusers format and ComfyUI-native keys.

diffusers: `transformer.<module>.lora_A.weight` / `.lora_B.weight` with the adapter's LoraConfig in the
file metadata (so `load_lora_weights` restores rank and alpha exactly).
comfyui: `diffusion_model.blocks.N.self_attn.{q,k,v,o}.lora_A.weight` / `.lora_B.weight` plus `.alpha`,
the layout ComfyUI's Wan loader reads; diffusers converts it on load too. Rows/columns of unselected heads
are exactly zero in both, because they are exactly zero in the trained adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..backbones.base import Backbone, Expert
from ..errors import InputError
from ..runs import atomic_save_tensors, atomic_write, load_tensors, read_metadata
from .lora import adapter_state

FORMATS = ("diffusers", "comfyui")
PREFIX = "transformer"  # diffusers' key prefix of the transformer's LoRA weights and adapter config
LORA_METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights puts the adapter config




def comfyui_state(comfyui_key: Callable[[str], str], state: dict[str, torch.Tensor], alpha: float
                  ) -> dict[str, torch.Tensor]:
    """Rename PEFT keys (`<module>.lora_A.weight`) to ComfyUI's and add one `.alpha` scalar per module."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, which = key.rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        target = comfyui_key(module)
        out[f"{target}.{which}.weight"] = tensor
        out[f"{target}.alpha"] = torch.tensor(float(alpha))
    return out


def export_lora(backbone: Backbone, expert: Expert, adapter: str, path: Path, fmt: str = "diffusers") -> Path:
    """Write `expert`'s in-memory adapter `adapter` to `path` in format `fmt` (atomically)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown LoRA format {fmt!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = adapter_state(expert.module, adapter)
    config = expert.module.peft_config[adapter]
    if fmt == "diffusers":
        backbone.save_diffusers_lora(str(path), state, config.to_dict())
    else:
        atomic_save_tensors(path, comfyui_state(backbone.comfyui_key, state, config.lora_alpha),
                            {"format": "comfyui", "adapter": adapter})
    return path


def saved_adapter_config(path: Path) -> dict:
    """The adapter config (rank, alpha, targets) a diffusers-format LoRA file of ours holds in its metadata."""
    metadata = read_metadata(path)
    try:
        config = json.loads(metadata[LORA_METADATA_KEY])
        return {key.removeprefix(f"{PREFIX}."): value for key, value in config.items()}
    except (KeyError, ValueError) as err:
        raise InputError(f"{path}: not a LoRA file with its adapter config in the metadata ({err})") from err


def export_file(source: Path, path: Path, fmt: str, comfyui_key: Callable[[str], str], adapter: str) -> Path:
    """Write a run's saved LoRA file (diffusers format, adapter config in the metadata) in format `fmt`, reading
    nothing but that file: diffusers is a verified copy, comfyui renames the keys and adds the saved alpha."""
    if fmt not in FORMATS:
        raise InputError(f"unknown LoRA format {fmt!r} (choose from {', '.join(FORMATS)})")
    state = load_tensors(source)
    config = saved_adapter_config(source)
    if fmt == "diffusers":
        return atomic_write(Path(path), lambda tmp: tmp.write_bytes(Path(source).read_bytes()))
    peft_state = {key.removeprefix(f"{PREFIX}."): tensor for key, tensor in state.items()}
    return atomic_save_tensors(Path(path), comfyui_state(comfyui_key, peft_state, float(config["lora_alpha"])),
                               {"format": "comfyui", "adapter": adapter})
