"""Head-masked LoRA: a PEFT LoRA on self-attention whose update touches only the selected heads.

For q/k/v the rows of lora_B that produce unselected heads' channels are zero; for the output projection
the columns of lora_A that read unselected heads' channels are zero. Both are zeroed at creation and their
gradients are masked, so AdamW (whose update is 0 for a zero gradient and whose decoupled weight decay
keeps 0 at 0) never moves them: the masked rows/columns stay exactly zero for the whole run. The base
model is left untouched.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from peft import LoraConfig
from torch import nn

from ..backbones.base import second_adapter_allowed
from ..backbones.experts import COLUMN_ROLES, ROW_ROLES, Expert
from ..errors import InputError

ADAPTERS = ("spatial", "motion")


def head_mask(heads: list[int], num_heads: int, head_dim: int) -> torch.Tensor:
    """(num_heads * head_dim,) float mask with ones on the channels of `heads`."""
    mask = torch.zeros(num_heads, head_dim)
    mask[heads] = 1
    return mask.flatten()


def target_modules(
    expert: Expert, selection: dict[int, list[int]], include_out: bool
) -> dict[str, tuple[str, int, list[int]]]:
    """Module name -> (role, layer, selected heads), for each projection of every layer with at least one head."""
    roles = ROW_ROLES + (COLUMN_ROLES if include_out else ())
    return {
        name: (role, layer, heads)
        for layer, heads in selection.items()
        if heads
        for role, name in expert.sites[layer].targets().items()
        if role in roles
    }


def _lora_pair(module: nn.Module, adapter: str) -> tuple[nn.Parameter, nn.Parameter]:
    return module.lora_A[adapter].weight, module.lora_B[adapter].weight


def add_masked_lora(
    expert: Expert,
    adapter: str,
    selection: dict[int, list[int]],
    rank: int,
    alpha: float,
    include_out: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Add adapter `adapter` on the selected heads; returns module name -> mask, applied to weights and grads.

    Raises ValueError when no layer has a selected head (an empty LoRA would be a silent no-op)."""
    targets = target_modules(expert, selection, include_out)
    if not targets:
        raise InputError(f"no heads selected for the {adapter!r} LoRA: nothing to train")
    transformer = expert.module
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=sorted(targets), init_lora_weights=True)
    with torch.random.fork_rng(devices=[]), second_adapter_allowed():
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=adapter)
    # PEFT puts an adapter beside its base weight; one in a swapped block (`model.blocks_to_swap`) is in host memory
    # there, but the adapter trains on the device the transformer runs on, with its gradients and optimizer state
    device = next(transformer.parameters()).device
    masks = {}
    for name, (role, layer, heads) in targets.items():
        module = transformer.get_submodule(name)
        site = expert.sites[layer]
        mask = head_mask(heads, site.heads, site.head_dim)
        lora_a, lora_b = _lora_pair(module, adapter)
        for param in (lora_a, lora_b):  # train in float32 even over a bf16 base model
            param.data = param.data.to(device, torch.float32)
        if role in COLUMN_ROLES:
            param, shaped = lora_a, mask.view(1, -1)
        else:
            param, shaped = lora_b, mask.view(-1, 1)
        shaped = shaped.to(param)
        with torch.no_grad():
            param.mul_(shaped)
        param.register_hook(lambda grad, m=shaped: grad * m)
        masks[name] = shaped
    return masks


def lora_parameters(transformer: nn.Module, adapter: str) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of one adapter's LoRA weights, in a stable order."""
    for name, param in transformer.named_parameters():
        if ".lora_" in name and name.endswith(f".{adapter}.weight"):
            yield name, param


def set_trainable(transformer: nn.Module, adapter: str | None) -> list[nn.Parameter]:
    """Freeze everything but `adapter`'s LoRA weights; returns the trainable parameters."""
    transformer.requires_grad_(False)
    params = [p for _, p in lora_parameters(transformer, adapter)] if adapter else []
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state(transformer: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """PEFT-style state dict of one adapter: `<module>.lora_A.weight` / `<module>.lora_B.weight`."""
    return {
        name.replace(f".{adapter}.weight", ".weight"): p.detach().cpu().clone()
        for name, p in lora_parameters(transformer, adapter)
    }


def load_adapter_state(transformer: nn.Module, adapter: str, state: dict[str, torch.Tensor]) -> None:
    """Copy a state dict from `adapter_state` back into an existing adapter, checking every key."""
    params = dict(lora_parameters(transformer, adapter))
    expected = {name.replace(f".{adapter}.weight", ".weight") for name in params}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise InputError(f"LoRA keys do not match the {adapter!r} adapter (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name.replace(f".{adapter}.weight", ".weight")])
