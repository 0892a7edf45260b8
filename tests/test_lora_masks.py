"""Head-masked LoRA: unselected heads' LoRA rows/columns stay exactly zero through training."""

from __future__ import annotations

import pytest
import torch

from follow_your_motion.config import MotionSettings
from follow_your_motion.method.lora import adapter_state, add_masked_lora, head_mask, lora_parameters
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir

SELECTION = {0: [0, 1], 1: [2]}
ROW_PROJECTIONS = ("to_q", "to_k", "to_v")



def _inputs(wan):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 32, 32, generator=gen) * 2 - 1
    return wan.encode_video(video), wan.encode_prompt("a tiger walks through snow")


def _head_slice(head: int, head_dim: int) -> slice:
    return slice(head * head_dim, (head + 1) * head_dim)


def _lora(wan, name: str, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
    module = wan.experts[0].module.get_submodule(name)
    return module.lora_A[adapter].weight.detach().clone(), module.lora_B[adapter].weight.detach().clone()


def _train(wan, tmp_path, weight_decay: float, steps: int = 4, selection=SELECTION):
    lat, text = _inputs(wan)
    add_masked_lora(wan.experts[0], "motion", selection, rank=4, alpha=4)
    settings = MotionSettings(
        steps=steps, keep_frames=3, lr=5e-2, weight_decay=weight_decay, checkpoint_every=100,
        max_grad_norm=None,
    )
    initial = {n: p.detach().clone() for n, p in lora_parameters(wan.experts[0].module, "motion")}
    state = train_adapter(
        wan, wan.experts[0], RunDir(tmp_path / "run"), "motion", "motion", settings, motion_inputs(lat, text, settings),
        motion_weight=1.0,
    )
    return initial, state


def test_head_mask_layout():
    mask = head_mask([0, 2], num_heads=4, head_dim=3)
    assert mask.tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_unselected_heads_stay_exactly_zero(wan, tmp_path, weight_decay):
    base = {n: p.detach().clone() for n, p in wan.experts[0].module.named_parameters()}
    initial, state = _train(wan, tmp_path, weight_decay)
    hd, heads = wan.experts[0].sites[0].head_dim, wan.experts[0].sites[0].heads
    for layer, selected in SELECTION.items():
        unselected = [h for h in range(heads) if h not in selected]
        prefix = f"blocks.{layer}.attn1"
        for proj in ROW_PROJECTIONS:
            name = f"{prefix}.{proj}"
            lora_a, lora_b = _lora(wan, name, "motion")
            assert lora_b.shape == (heads * hd, 4)
            for h in unselected:
                rows = lora_b[_head_slice(h, hd)]
                assert torch.equal(rows, torch.zeros_like(rows)), (name, h)
            for h in selected:
                rows = lora_b[_head_slice(h, hd)]
                assert rows.abs().sum() > 0, (name, h)
            # the file-level state agrees with the live module
            assert torch.equal(state[f"{name}.lora_B.weight"], lora_b)
            assert torch.equal(state[f"{name}.lora_A.weight"], lora_a)
            if proj == "to_v":  # v is head-local: its effective delta is zero on unselected heads
                delta = lora_b @ lora_a
                for h in unselected:
                    block = delta[_head_slice(h, hd)]
                    assert torch.equal(block, torch.zeros_like(block)), (name, h)
                for h in selected:
                    assert delta[_head_slice(h, hd)].abs().sum() > 0
        name = f"{prefix}.to_out.0"
        lora_a, lora_b = _lora(wan, name, "motion")
        assert lora_a.shape == (4, heads * hd)
        for h in unselected:
            cols = lora_a[:, _head_slice(h, hd)]
            assert torch.equal(cols, torch.zeros_like(cols)), (name, h)
        for h in selected:
            cols = lora_a[:, _head_slice(h, hd)]
            assert cols.abs().sum() > 0, (name, h)
            # trained, not just initialised
            assert not torch.equal(cols, initial[f"{name}.lora_A.motion.weight"][:, _head_slice(h, hd)])
        assert lora_b.abs().sum() > 0
        delta = lora_b @ lora_a
        for h in unselected:
            block = delta[:, _head_slice(h, hd)]
            assert torch.equal(block, torch.zeros_like(block)), (name, h)
        for h in selected:
            assert delta[:, _head_slice(h, hd)].abs().sum() > 0

    # the base model is untouched
    for name, param in wan.experts[0].module.named_parameters():
        if ".lora_" in name:
            continue
        original = name.replace(".base_layer.", ".")
        assert torch.equal(param, base[original]), name


def test_unselected_heads_do_not_move_model_output_channels(wan, tmp_path):
    """With the adapter, the v/out LoRA contributions of unselected heads vanish: the LoRA delta of
    to_v's output on unselected head channels is exactly zero for any input."""
    _train(wan, tmp_path, weight_decay=0.5, steps=3)
    hd = wan.experts[0].sites[0].head_dim
    module = wan.experts[0].module.get_submodule("blocks.1.attn1.to_v")
    x = torch.randn(2, 7, module.in_features)
    with torch.no_grad():
        delta = module(x) - module.base_layer(x)
    for h in (0, 1, 3):
        block = delta[..., _head_slice(h, hd)]
        assert torch.equal(block, torch.zeros_like(block)), h
    assert delta[..., _head_slice(2, hd)].abs().sum() > 0


def test_layer_without_selected_heads_has_no_lora(wan):
    add_masked_lora(wan.experts[0], "motion", {0: [1], 1: []}, rank=4, alpha=4)
    names = [n for n, _ in lora_parameters(wan.experts[0].module, "motion")]
    assert names
    assert not any(n.startswith("blocks.1.") for n in names)
    for proj in (*ROW_PROJECTIONS, "to_out.0"):
        assert not hasattr(wan.experts[0].module.get_submodule(f"blocks.1.attn1.{proj}"), "lora_A")
        assert hasattr(wan.experts[0].module.get_submodule(f"blocks.0.attn1.{proj}"), "lora_A")
    # cross-attention and everything else is never targeted
    for name, module in wan.experts[0].module.named_modules():
        if hasattr(module, "lora_A"):
            assert name.startswith("blocks.0.attn1."), name
    expected = {
        f"blocks.0.attn1.{proj}.lora_{ab}.weight" for proj in (*ROW_PROJECTIONS, "to_out.0") for ab in "AB"
    }
    assert set(adapter_state(wan.experts[0].module, "motion")) == expected


def test_include_out_false_skips_output_projection(wan):
    add_masked_lora(wan.experts[0], "motion", {1: [3]}, rank=2, alpha=2, include_out=False)
    assert not hasattr(wan.experts[0].module.get_submodule("blocks.1.attn1.to_out.0"), "lora_A")
    assert hasattr(wan.experts[0].module.get_submodule("blocks.1.attn1.to_v"), "lora_A")


def test_masks_applied_at_creation(wan):
    masks = add_masked_lora(wan.experts[0], "motion", SELECTION, rank=4, alpha=4)
    hd = wan.experts[0].sites[0].head_dim
    projections = (*ROW_PROJECTIONS, "to_out.0")
    assert set(masks) == {f"blocks.{layer}.attn1.{p}" for layer in SELECTION for p in projections}
    lora_a, _ = _lora(wan, "blocks.1.attn1.to_out.0", "motion")
    for h in (0, 1, 3):
        assert torch.equal(lora_a[:, _head_slice(h, hd)], torch.zeros(4, hd))
    assert lora_a[:, _head_slice(2, hd)].abs().sum() > 0
    assert masks["blocks.1.attn1.to_out.0"].shape == (1, wan.experts[0].sites[0].heads * hd)
    assert masks["blocks.1.attn1.to_q"].shape == (wan.experts[0].sites[0].heads * hd, 1)


@pytest.mark.parametrize("selection", [{}, {0: [], 1: []}])
def test_empty_selection_raises(wan, selection):
    with pytest.raises(ValueError, match="no heads selected"):
        add_masked_lora(wan.experts[0], "motion", selection, rank=4, alpha=4)
    assert not getattr(wan.experts[0].module, "peft_config", None)
