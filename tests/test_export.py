"""Exported LoRA files load with the public diffusers API and reproduce the trained model exactly."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from follow_your_motion.config import MotionSettings
from follow_your_motion.method.export import export_lora
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir

SELECTION = {0: [0, 1], 1: [2]}
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
COMFY_ROLES = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}



@pytest.fixture
def trained(wan, tmp_path):
    """The tiny Wan with a trained motion adapter, the probe inputs and the adapter's output on them."""
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 32, 32, generator=gen) * 2 - 1
    lat = wan.encode_video(video)
    text = wan.encode_prompt("a tiger walks through snow")
    add_masked_lora(wan.experts[0], "motion", SELECTION, rank=RANK, alpha=ALPHA)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=RANK, alpha=ALPHA, max_grad_norm=None)
    train_adapter(
        wan, wan.experts[0], RunDir(tmp_path / "run"), "motion", "motion", settings, motion_inputs(lat, text, settings),
        motion_weight=1.0,
    )
    noisy = 0.4 * lat + 0.6 * torch.randn(lat.shape, generator=gen)
    timestep = torch.tensor([600.0])
    with torch.no_grad(), wan.adapters({"motion": 1.0}):
        out = wan.predict(wan.experts[0], noisy, timestep, text)
    return wan, noisy, timestep, text, out


def _pipe_output(pipe: WanPipeline, noisy, timestep, text) -> torch.Tensor:
    with torch.no_grad():
        return pipe.transformer(
            hidden_states=noisy, timestep=timestep, encoder_hidden_states=text.tensors["text"], return_dict=False
        )[0].float()


def _head_slice(head: int, head_dim: int) -> slice:
    return slice(head * head_dim, (head + 1) * head_dim)


def _read(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    return load_file(str(path)), metadata


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui"])
def test_export_round_trip_through_diffusers(trained, tiny_wan_dir, tmp_path, fmt):
    wan, noisy, timestep, text, out = trained
    path = export_lora(wan, wan.experts[0], "motion", tmp_path / f"{fmt}.safetensors", fmt)
    assert path.is_file()

    pipe = WanPipeline.from_pretrained(str(tiny_wan_dir))
    base = _pipe_output(pipe, noisy, timestep, text)
    # the trained adapter clearly changes the model
    assert (out - base).abs().max() > 1e-3

    pipe.load_lora_weights(str(path), adapter_name="x")
    loaded = _pipe_output(pipe, noisy, timestep, text)
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()
    assert (loaded - base).abs().max() > 1e-3

    # the backbone with its adapter switched off is the base model
    with torch.no_grad(), wan.adapters({"motion": 0.0}):
        off = wan.predict(wan.experts[0], noisy, timestep, text)
    assert torch.allclose(off, base, atol=1e-6, rtol=0)

    # the loaded config carries the trained rank and alpha (scale alpha / rank = 2), or an equivalent
    # rescaling of the weights; either way the output at scale 1 above must match
    config = pipe.transformer.peft_config["x"]
    assert config.r == RANK


def test_diffusers_metadata_preserves_alpha(trained, tmp_path):
    wan = trained[0]
    path = export_lora(wan, wan.experts[0], "motion", tmp_path / "m.safetensors")
    tensors, metadata = _read(path)
    config = json.loads(metadata["lora_adapter_metadata"])
    assert config["transformer.lora_alpha"] == ALPHA
    assert config["transformer.r"] == RANK
    expected_modules = {f"blocks.{i}.attn1.{p}" for i in SELECTION for p in COMFY_ROLES}
    assert set(config["transformer.target_modules"]) == expected_modules
    assert set(tensors) == {f"transformer.{m}.lora_{ab}.weight" for m in expected_modules for ab in "AB"}


def test_comfyui_keys_exact(trained, tmp_path):
    wan = trained[0]
    path = export_lora(wan, wan.experts[0], "motion", tmp_path / "c.safetensors", "comfyui")
    tensors, _ = _read(path)
    expected = {
        f"diffusion_model.blocks.{i}.self_attn.{role}.{suffix}"
        for i in SELECTION
        for role in "qkvo"
        for suffix in ("lora_A.weight", "lora_B.weight", "alpha")
    }
    assert set(tensors) == expected
    for key, tensor in tensors.items():
        if key.endswith(".alpha"):
            assert tensor.ndim == 0 and float(tensor) == ALPHA
        elif key.endswith("lora_A.weight"):
            assert tensor.shape == (RANK, wan.experts[0].sites[0].heads * wan.experts[0].sites[0].head_dim)
        else:
            assert tensor.shape == (wan.experts[0].sites[0].heads * wan.experts[0].sites[0].head_dim, RANK)


def test_exported_unselected_heads_exactly_zero(trained, tmp_path):
    wan = trained[0]
    hd, heads = wan.experts[0].sites[0].head_dim, wan.experts[0].sites[0].heads
    diffusers_t, _ = _read(export_lora(wan, wan.experts[0], "motion", tmp_path / "d.safetensors"))
    comfy_t, _ = _read(export_lora(wan, wan.experts[0], "motion", tmp_path / "c.safetensors", "comfyui"))
    for layer, selected in SELECTION.items():
        for proj, role in COMFY_ROLES.items():
            for tensors, a_key, b_key in (
                (
                    diffusers_t,
                    f"transformer.blocks.{layer}.attn1.{proj}.lora_A.weight",
                    f"transformer.blocks.{layer}.attn1.{proj}.lora_B.weight",
                ),
                (
                    comfy_t,
                    f"diffusion_model.blocks.{layer}.self_attn.{role}.lora_A.weight",
                    f"diffusion_model.blocks.{layer}.self_attn.{role}.lora_B.weight",
                ),
            ):
                lora_a, lora_b = tensors[a_key], tensors[b_key]
                for h in range(heads):
                    block = lora_a[:, _head_slice(h, hd)] if role == "o" else lora_b[_head_slice(h, hd)]
                    if h in selected:
                        assert block.abs().sum() > 0, (a_key, h)
                    else:
                        assert torch.equal(block, torch.zeros_like(block)), (a_key, h)
    # both files hold the same weights under different names
    for key, tensor in diffusers_t.items():
        module, which = key[len("transformer.") :].rsplit(".", 2)[:2]
        _, layer, _, proj = module.split(".", 3)
        comfy_key = f"diffusion_model.blocks.{layer}.self_attn.{COMFY_ROLES[proj]}.{which}.weight"
        assert torch.equal(comfy_t[comfy_key], tensor), key


def test_export_rejects_unknown_format(trained, tmp_path):
    with pytest.raises(ValueError, match="unknown LoRA format"):
        export_lora(trained[0], trained[0].experts[0], "motion", tmp_path / "x.safetensors", "kohya")
