"""LoRA files users can load without us: diffusers format and ComfyUI-native keys.

diffusers: `transformer.<module>.lora_A.weight` / `.lora_B.weight` with the adapter's LoraConfig in the
file metadata (so `load_lora_weights` restores rank and alpha exactly).
comfyui: `diffusion_model.blocks.N.self_attn.{q,k,v,o}.lora_A.weight` / `.lora_B.weight` plus `.alpha`,
the layout ComfyUI's Wan loader reads; diffusers converts it on load too. Rows/columns of unselected heads
are exactly zero in both, because they are exactly zero in the trained adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backbones.base import Backbone
from ..runs import atomic_save_tensors
from .lora import adapter_state

FORMATS = ("diffusers", "comfyui")


def lora_metadata(backbone: Backbone, adapter: str) -> dict:
    return backbone.transformer.peft_config[adapter].to_dict()


def comfyui_state(backbone: Backbone, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Rename PEFT keys to ComfyUI's and add one `.alpha` scalar per module."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, which = key.rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        target = backbone.comfyui_key(module)
        out[f"{target}.{which}.weight"] = tensor
        out[f"{target}.alpha"] = torch.tensor(float(alpha))
    return out


def export_lora(backbone: Backbone, adapter: str, path: Path, fmt: str = "diffusers") -> Path:
    """Write the in-memory adapter `adapter` to `path` in format `fmt` (atomically)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown LoRA format {fmt!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = adapter_state(backbone.transformer, adapter)
    if fmt == "diffusers":
        backbone.save_diffusers_lora(str(path), state, lora_metadata(backbone, adapter))
    else:
        alpha = backbone.transformer.peft_config[adapter].lora_alpha
        atomic_save_tensors(path, comfyui_state(backbone, state, alpha), {"format": "comfyui", "adapter": adapter})
    return path
