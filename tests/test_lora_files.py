"""The LoRA file helpers every diffusers family shares (`backbones/lora_files.py`): the ComfyUI-native to PEFT
conversion and the diffusers-format writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from follow_your_motion.backbones.lora_files import LORA_METADATA_KEY, comfyui_to_peft, write_diffusers_lora
from follow_your_motion.errors import InputError


def comfy_state(ranks: tuple[int, ...], alphas: tuple[float, ...] | None) -> dict[str, torch.Tensor]:
    """A ComfyUI-native LoRA over modules m0, m1, ... with the given ranks (and alphas, where given)."""
    state = {}
    for i, rank in enumerate(ranks):
        state[f"diffusion_model.m{i}.lora_A.weight"] = torch.full((rank, 3), float(i))
        state[f"diffusion_model.m{i}.lora_B.weight"] = torch.full((5, rank), float(i))
        if alphas is not None:
            state[f"diffusion_model.m{i}.alpha"] = torch.tensor(alphas[i])
    return state


def strip(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("diffusion_model."): value for key, value in weights.items()}


def test_one_rank_and_alpha_go_into_the_adapter_config():
    state = comfy_state((4, 4), (8.0, 8.0))
    converted, config = comfyui_to_peft(state, strip, missing_alpha_is_rank=False)
    assert config == {"r": 4, "lora_alpha": 8.0, "target_modules": ["m0", "m1"]}
    assert sorted(converted) == ["m0.lora_A.weight", "m0.lora_B.weight", "m1.lora_A.weight", "m1.lora_B.weight"]
    assert all(torch.equal(converted[key], state[f"diffusion_model.{key}"]) for key in converted)


def test_a_missing_alpha_is_the_rank_only_where_the_family_reads_it_so():
    _, config = comfyui_to_peft(comfy_state((4,), None), strip, missing_alpha_is_rank=True)
    assert config["lora_alpha"] == 4.0
    with pytest.raises(InputError, match=r"one rank and one alpha .*ranks \[4\], alphas \[\]"):
        comfyui_to_peft(comfy_state((4,), None), strip, missing_alpha_is_rank=False)


@pytest.mark.parametrize(("ranks", "alphas"), [((4, 2), (8.0, 8.0)), ((4, 4), (8.0, 4.0))])
def test_several_ranks_or_alphas_are_refused(ranks, alphas):
    with pytest.raises(InputError, match="one rank and one alpha"):
        comfyui_to_peft(comfy_state(ranks, alphas), strip, missing_alpha_is_rank=True)


def test_diffusers_file_has_prefixed_keys_and_the_config_in_its_metadata(tmp_path):
    path = tmp_path / "lora.safetensors"
    a = torch.arange(6.0).view(2, 3)
    write_diffusers_lora(str(path), {"m0.lora_A.weight": a}, {"r": 2, "target_modules": {"m0"}})
    with safe_open(str(path), "pt") as handle:
        assert list(handle.keys()) == ["transformer.m0.lora_A.weight"]
        assert torch.equal(handle.get_tensor("transformer.m0.lora_A.weight"), a)
        config = json.loads(handle.metadata()[LORA_METADATA_KEY])
    assert config == {"transformer.r": 2, "transformer.target_modules": ["m0"]}
