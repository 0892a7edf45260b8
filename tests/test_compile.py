"""`model.compile`: the transformer blocks compiled with torch.compile give the eager model's loss and LoRA
gradients on the same batch, keep the head masks exact, and stage 1's capture hooks still see every layer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from follow_your_motion.backbones.wan import WanBackbone
from follow_your_motion.config import HeadSettings, MotionSettings
from follow_your_motion.method.heads import classify_heads
from follow_your_motion.method.lora import add_masked_lora, lora_parameters, set_trainable
from follow_your_motion.method.losses import flow_matching_loss, motion_loss
from follow_your_motion.method.objective import training_sample
from follow_your_motion.method.sparse import step_generator
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None,
                                    reason="torch.compile's inductor builds CPU kernels with g++: not on PATH")
SELECTION = {0: [0, 1], 1: [2]}


def _backbone(tiny_wan_dir, compiled: bool):
    """A tiny Wan with a head-masked motion LoRA whose B is random (so the LoRA is in the loss), compiled or not;
    compiled before the LoRA is added, as `Transfer` does."""
    wan = WanBackbone.load(str(tiny_wan_dir))
    if compiled:
        wan.compile_blocks()
    masks = add_masked_lora(wan.experts[0], "motion", SELECTION, rank=4, alpha=4, seed=3)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in lora_parameters(wan.experts[0].module, "motion"):
            if ".lora_B." in name:  # q/k/v: masked rows stay zero (o's mask is on its lora_A columns)
                mask = masks[name.split(".lora_B.")[0]]
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1 * (mask if mask.shape[1] == 1 else 1))
    return wan, masks


def _loss_and_grads(wan, settings: MotionSettings):
    """One training micro-batch exactly as `train_adapter` makes it (step 0), with gradient checkpointing."""
    expert = wan.experts[0]
    video = torch.rand(3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    inputs = motion_inputs(wan.encode_video(video), wan.encode_prompt("a tiger walks through snow"), settings)
    params = set_trainable(expert.module, "motion")
    expert.module.enable_gradient_checkpointing()
    expert.module.train()
    generator = step_generator(settings.seed, 0, 3)
    batch = inputs(0, generator)
    noise = wan.draw_noise(batch.latents.shape, generator)
    noisy, timesteps, target = training_sample(wan, batch.latents, noise, generator, "uniform", wan.flow_shift,
                                               expert.sigma_range)
    pred = wan.predict(expert, noisy, timesteps, batch.cond, batch.frame_positions)
    loss = flow_matching_loss(pred, target) + motion_loss(pred, target, "paper")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for (n, _), p in zip(lora_parameters(expert.module, "motion"), params,
                                                                    strict=True)}


@needs_compiler
def test_compiled_blocks_give_the_same_loss_and_gradients(tiny_wan_dir):
    settings = MotionSettings(steps=1, keep_frames=3, seed=5)
    eager_loss, eager_grads = _loss_and_grads(_backbone(tiny_wan_dir, False)[0], settings)
    wan, masks = _backbone(tiny_wan_dir, True)
    loss, grads = _loss_and_grads(wan, settings)
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=0), (loss, eager_loss)
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name
        mask = masks[name.split(".lora_")[0]]
        if (".lora_B." in name) == (mask.shape[1] == 1):  # q/k/v: B's rows; o: A's columns
            # the mask's gradient hook still runs under compile: masked rows / columns get exactly zero
            assert torch.equal(grad * (1 - mask), torch.zeros_like(grad)), name
    assert any(g.abs().sum() > 0 for g in grads.values())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compiled code did run


@needs_compiler
def test_compiled_training_loop_and_stage_1(tiny_wan_dir, tmp_path):
    """`train_adapter` over compiled blocks logs the eager run's first loss; stage 1's capture pass (hooks put on
    after compiling, which compiled code would skip) runs eager and classifies the heads exactly as eager does."""
    settings = MotionSettings(steps=2, keep_frames=3, seed=5, lr=1e-2, checkpoint_every=10, grad_checkpointing=True)
    logged = {}
    heads = {}
    for compiled in (False, True):
        wan, _ = _backbone(tiny_wan_dir, compiled)
        video = torch.rand(3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        latents, text = wan.encode_video(video), wan.encode_prompt("a tiger walks through snow")
        heads[compiled] = classify_heads(wan, wan.experts[0], latents, text, HeadSettings(num_queries=16)).to_json()
        run = RunDir(tmp_path / str(compiled))
        train_adapter(wan, wan.experts[0], run, "motion", "motion", settings, motion_inputs(latents, text, settings),
                      motion_weight=1.0)
        logged[compiled] = [json.loads(line) for line in (run.root / "log.jsonl").read_text().splitlines()]
    assert heads[True] == heads[False]
    first = [next(e for e in logged[c] if e.get("step") == 1) for c in (False, True)]
    assert first[1]["fm"] == pytest.approx(first[0]["fm"], rel=1e-5)
    assert first[1]["motion"] == pytest.approx(first[0]["motion"], rel=1e-5)


BUILDERS = {
    "wan": ("tiny_wan", "build_tiny_wan_pipeline", {"WanTransformerBlock": 2}, {"text_encoder", "vae"}),
    "ltx": ("tiny_ltx", "build_tiny_ltx_pipeline", {"LTXVideoTransformerBlock": 2}, {"text_encoder", "vae"}),
    # CogVideoX's transformer declares no `_repeated_blocks`: the backbone names its block class
    "cogvideox": ("tiny_cogvideox", "build_tiny_cogvideox_pipeline", {"CogVideoXBlock": 2}, {"text_encoder", "vae"}),
    "hunyuan_video15": ("tiny_hunyuan_video15", "build_tiny_hunyuan_video15_pipeline",
                        {"HunyuanVideo15TransformerBlock": 2, "HunyuanVideo15PatchEmbed": 1,
                         "HunyuanVideo15TokenRefiner": 1}, {"text_encoder", "text_encoder_2", "vae"}),
}


@pytest.mark.parametrize("family", BUILDERS)
def test_every_family_names_its_blocks_and_encoders(family, tmp_path, monkeypatch):
    """`compile_blocks` compiles each transformer block once (nothing else: the capture hooks and the
    positions' hooks sit outside or run eager); `encoders` are every module but the transformer."""
    import importlib

    from follow_your_motion.backbones import load_backbone

    module, builder, blocks, encoders = BUILDERS[family]
    backbone = load_backbone(str(getattr(importlib.import_module(module), builder)(tmp_path / "pipe")))
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    backbone.compile_blocks()
    backbone.compile_blocks()  # once only
    assert {name: compiled.count(name) for name in compiled} == blocks
    assert set(backbone.encoders()) == encoders
