"""Speed options leave the math unchanged: diffusers' attention backend, and one host-device sync per step."""

from __future__ import annotations

import pytest
import torch

from follow_your_motion.config import MotionSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir


def _probe(wan):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=gen)
    return latents, wan.encode_prompt("a tiger walks through snow")


def test_native_attention_backend_is_the_default_bit_for_bit(wan):
    latents, cond = _probe(wan)
    expert = wan.experts[0]
    with torch.no_grad():
        default = wan.predict(expert, latents, torch.tensor([500.0]), cond)
        wan.set_attention_backend("native")
        native = wan.predict(expert, latents, torch.tensor([500.0]), cond)
        try:
            wan.set_attention_backend("_native_math")
            math = wan.predict(expert, latents, torch.tensor([500.0]), cond)
        finally:  # diffusers also makes the backend the process's active one: later tests must not inherit it
            wan.set_attention_backend("native")
    assert torch.equal(default, native)
    assert torch.allclose(default, math, atol=1e-5, rtol=0)


def test_attention_backend_refusals_name_the_setting(wan):
    with pytest.raises(InputError, match="model.attention_backend 'fastest' is not one of diffusers' backends"):
        wan.set_attention_backend("fastest")
    with pytest.raises(InputError, match="model.attention_backend 'flash' cannot be used here"):
        wan.set_attention_backend("flash")  # flash-attn is not installed


def test_training_reads_the_losses_once_a_step(wan, tmp_path, monkeypatch):
    """No `.item()` per micro-batch (each one waits for the device); the losses still reach the log."""
    latents, cond = _probe(wan)
    add_masked_lora(wan.experts[0], "motion", {0: [0, 1]}, rank=2, alpha=2)
    settings = MotionSettings(steps=2, keep_frames=2, rank=2, grad_accum=3, checkpoint_every=10)

    item = torch.Tensor.item

    def refuse(self):  # a loss read back per micro-batch (the optimizer's own CPU step counter is fine)
        if self.grad_fn is not None:
            raise AssertionError("a loss was read with Tensor.item() inside the training loop")
        return item(self)

    monkeypatch.setattr(torch.Tensor, "item", refuse)
    run = RunDir(tmp_path / "run")
    train_adapter(wan, wan.experts[0], run, "motion", "motion", settings, motion_inputs(latents, cond, settings),
                  motion_weight=1.0)
    monkeypatch.undo()
    import json

    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if s["event"] == "step"] == [1, 2]
    assert all(s["fm"] > 0 and 0 <= s["motion"] <= 2 for s in steps if s["event"] == "step")
