"""The numerics stage 1 and stage 3 rest on, checked against hand values and against diffusers' own code."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import record_attention_inputs
from diffusers.models.transformers import transformer_wan

from follow_your_motion.method.losses import motion_loss


def _clip(points: list[tuple[float, float]]) -> torch.Tensor:
    """Per-frame 2-channel values of one position, as (B=1, C=2, F, h=1, w=1)."""
    return torch.tensor(points, dtype=torch.float64).T.reshape(1, 2, len(points), 1, 1)


# prediction: dv = (1, 0), (0, 1); target: dv = (1, 1), (0, -1)
PRED = _clip([(1, 0), (2, 0), (2, 1)])
TARGET = _clip([(0, 0), (1, 1), (1, 0)])


def test_paper_motion_loss_by_hand():
    # cosine over channels per frame pair: cos((1,0),(1,1)) = 1/sqrt 2, cos((0,1),(0,-1)) = -1
    expected = ((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2
    assert motion_loss(PRED, TARGET, "paper").item() == pytest.approx(expected, abs=1e-7)
    assert motion_loss(PRED, PRED + 3.0, "paper").item() == pytest.approx(0.0, abs=1e-7)  # offsets cancel


def test_release_motion_loss_by_hand():
    # |dv| per channel along time: channel 0 (1, 0) vs (1, 0): cos 1; channel 1 (0, 1) vs (1, 1): cos 1/sqrt 2
    expected = ((1 - 1) + (1 - 1 / math.sqrt(2))) / 2
    assert motion_loss(PRED, TARGET, "release").item() == pytest.approx(expected, abs=1e-7)


def test_motion_loss_of_one_frame_is_zero_and_forms_are_checked():
    assert motion_loss(PRED[:, :, :1], TARGET[:, :, :1]).item() == 0.0
    with pytest.raises(ValueError, match="unknown motion loss form 'sideways'"):
        motion_loss(PRED, TARGET, "sideways")


@pytest.fixture
def processor_qk(monkeypatch):
    """Every (query, key) that diffusers' WanAttnProcessor hands to attention, in call order."""
    return record_attention_inputs(monkeypatch, transformer_wan, "dispatch_attention_fn")


@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_equals_the_processor_bit_for_bit(wan, processor_qk, positions):
    """Stage 1 scores the q and k the model attends with: after q/k norm and RoPE (and with replaced frame
    positions when given), exactly as diffusers' processor computes them."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=gen)
    text = wan.encode_prompt("a tiger walks through snow")
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad(), wan.capture_qk(wan.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
        wan.predict(wan.experts[0], latents, torch.tensor([700.0]), text, frame_positions)
    self_attention = processor_qk[0::2]  # each block calls attn1 (self) then attn2 (cross-attention)
    assert len(captured) == len(self_attention) == len(wan.experts[0].sites)
    for layer, (q, k) in captured.items():
        ref_q, ref_k = self_attention[layer]
        assert ref_k.shape[1] == ref_q.shape[1]  # self-attention: keys are the video tokens
        assert torch.equal(q, ref_q.float()) and torch.equal(k, ref_k.float()), layer
    if positions is not None:  # the replaced positions reach the rotary tables (so the test above can tell)
        with torch.no_grad(), wan.capture_qk(wan.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
            wan.predict(wan.experts[0], latents, torch.tensor([700.0]), text)
        assert not torch.equal(captured[0][0], self_attention[0][0].float())
