"""LoRA files users can load without us: diffusers format and ComfyUI-native keys.

diffusers: `transformer.<module>.lora_A.weight` / `.lora_B.weight` with the adapter's LoraConfig in the
file metadata (so `load_lora_weights` restores rank and alpha exactly).
comfyui: the keys of ComfyUI's own model of the family (Wan: `diffusion_model.blocks.N.self_attn.{q,k,v,o}`)
+ `.lora_A.weight` / `.lora_B.weight` and one `.alpha` per module. Where ComfyUI fuses projections into one
linear layer (HunyuanVideo's `img_attn.qkv`), the fused LoRA stacks the A's and puts the B's on the block
diagonal (rank n·r, alpha n·alpha, so ComfyUI's alpha / rank scale is unchanged): its update is exactly the
stacked updates of the parts. Rows/columns of unselected heads are exactly zero in every file, because they are
exactly zero in the trained adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..backbones.base import Backbone
from ..backbones.experts import Expert
from ..backbones.lora_files import LORA_METADATA_KEY, PREFIX
from ..errors import InputError
from ..runs import atomic_save_tensors, atomic_write, load_tensors, read_metadata
from .lora import adapter_state

FORMATS = ("diffusers", "comfyui")


def _fused(parts: dict[int, tuple[torch.Tensor, torch.Tensor]], slots: int, target: str
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One LoRA (A, B) for a fused weight from its parts' (A_i, B_i) by slot: A = [A_0; A_1; ...], B block-diagonal,
    so B·A = [B_0·A_0; B_1·A_1; ...]. A slot without a LoRA stays exactly zero (its rows are not changed)."""
    a0, b0 = next(iter(parts.values()))
    rank, rows = a0.shape[0], b0.shape[0]
    if any(a.shape != a0.shape or b.shape != b0.shape for a, b in parts.values()):
        raise ValueError(f"{target}: the fused projections' LoRAs differ in shape")
    a = a0.new_zeros(slots * rank, a0.shape[1])
    b = b0.new_zeros(slots * rows, slots * rank)
    for slot, (a_i, b_i) in parts.items():
        a[slot * rank:(slot + 1) * rank] = a_i
        b[slot * rows:(slot + 1) * rows, slot * rank:(slot + 1) * rank] = b_i
    return a, b


def comfyui_state(naming: type[Backbone] | Backbone, state: dict[str, torch.Tensor], alpha: float
                  ) -> dict[str, torch.Tensor]:
    """PEFT keys (`<module>.lora_A.weight`) renamed to the family's ComfyUI keys, fused where ComfyUI fuses the
    projections (`naming.comfyui_slot`), with one `.alpha` scalar per ComfyUI module."""
    groups: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    slots: dict[str, int] = {}
    for key in state:
        module, which, _ = key.rsplit(".", 2)
        if which != "lora_A":
            continue
        target = naming.comfyui_key(module)
        slot, slots[target] = naming.comfyui_slot(module)
        groups.setdefault(target, {})[slot] = (state[key], state[f"{module}.lora_B.weight"])
    out: dict[str, torch.Tensor] = {}
    for target, parts in groups.items():
        a, b = parts[0] if slots[target] == 1 else _fused(parts, slots[target], target)
        out[f"{target}.lora_A.weight"], out[f"{target}.lora_B.weight"] = a, b
        out[f"{target}.alpha"] = torch.tensor(float(alpha) * slots[target])
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
        atomic_save_tensors(path, comfyui_state(backbone, state, config.lora_alpha),
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


def export_file(source: Path, path: Path, fmt: str, naming: type[Backbone], adapter: str) -> Path:
    """Write a run's saved LoRA file (diffusers format, adapter config in the metadata) in format `fmt`, reading
    nothing but that file: diffusers is a verified copy, comfyui renames the keys and adds the saved alpha."""
    if fmt not in FORMATS:
        raise InputError(f"unknown LoRA format {fmt!r} (choose from {', '.join(FORMATS)})")
    state = load_tensors(source)
    config = saved_adapter_config(source)
    if fmt == "diffusers":
        return atomic_write(Path(path), lambda tmp: tmp.write_bytes(Path(source).read_bytes()))
    peft_state = {key.removeprefix(f"{PREFIX}."): tensor for key, tensor in state.items()}
    return atomic_save_tensors(Path(path), comfyui_state(naming, peft_state, float(config["lora_alpha"])),
                               {"format": "comfyui", "adapter": adapter})
