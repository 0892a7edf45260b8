"""The stage-3 step as a run takes it (`Transfer.tune_motion` -> `train_adapter`), its parts checked together: what
`predict` is given (the kept frames, their noise and their RoPE positions), and that the loss parts the log shows
are the ones whose gradient the LoRA receives, the motion loss included. Each part is also tested alone elsewhere
(test_sparse_rope.py, losses in test_numerics.py); these tests fail when the loop stops using one of them."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import moving_square

from follow_your_motion.method.lora import lora_parameters
from follow_your_motion.method.losses import flow_matching_loss, motion_loss
from follow_your_motion.method.sparse import sample_frames
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import write_video

FRAMES, KEEP = 17, 2  # 17 pixel frames are 5 latent frames on Wan; K = 2 keeps frames o and o + 2, never 0..1


def _job(wan, source, tmp_path, rope: str = "index", motion_weight: float = 1.0) -> Transfer:
    ref = write_video(tmp_path / "ref.mp4", moving_square(FRAMES), 8)
    cfg = resolve_config({
        "reference": str(ref), "prompt": "a square moves right", "model": {"source": str(source)},
        "video": {"frames": FRAMES, "height": 32, "width": 32},
        "heads": {"select": "all"},  # LoRA on every head: no stage 1 needed
        "spatial": {"steps": 0},
        "motion": {"steps": 1, "rank": 4, "lr": 0.01, "keep_frames": KEEP, "rope": rope,
                   "motion_weight": motion_weight, "max_grad_norm": None,
                   "mixed_precision": "no", "grad_checkpointing": False},  # exact float32 gradients
    })
    return Transfer(cfg, tmp_path / f"run-{rope}-{motion_weight}", backbone=wan)


def _lora_grads(wan) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in lora_parameters(wan.experts[0].module, "motion")}


def _expected_positions(rope: str, kept: torch.Tensor, total: int) -> torch.Tensor | None:
    """Written out here rather than taken from sparse.rope_positions, so a loop that skips it is caught."""
    return {"index": kept.double(), "scaled": torch.arange(KEEP, dtype=torch.float64) * total / KEEP,
            "none": None}[rope]


@pytest.mark.parametrize("rope", ["index", "scaled", "none"])
def test_stage3_step_predicts_the_kept_frames_at_their_positions_and_optimises_the_logged_losses(
        wan, tiny_wan_dir, tmp_path, monkeypatch, rope):
    job = _job(wan, tiny_wan_dir, tmp_path, rope)
    m = job.cfg.motion
    latents = job.motion_reference().latents
    total = latents.shape[2]
    kept = sample_frames(total, KEEP, m.sampling, m.seed, 0)
    assert total == 5 and not torch.equal(kept, torch.arange(KEEP))
    noises, seen = [], []
    draw_noise, predict = wan.draw_noise, wan.predict

    def recording_noise(shape, generator):
        noises.append(draw_noise(shape, generator))
        return noises[-1]

    def recording_predict(expert, noisy, timesteps, cond, frame_positions=None, spatial_stride=1):
        pred = predict(expert, noisy, timesteps, cond, frame_positions, spatial_stride)
        # the step's own loss, from the kept frames' clean latents and the drawn noise: its LoRA gradient
        target = noises[-1] - latents[:, :, kept]
        fm, mo = flow_matching_loss(pred, target), motion_loss(pred, target, m.motion_loss)
        params = [p for _, p in lora_parameters(expert.module, "motion")]
        grads = torch.autograd.grad(fm + m.motion_weight * mo, params, retain_graph=True)
        seen.append({"noisy": noisy.detach(), "timesteps": timesteps, "positions": frame_positions,
                     "fm": fm.item(), "motion": mo.item(), "grads": grads})
        return pred

    monkeypatch.setattr(wan, "draw_noise", recording_noise)
    monkeypatch.setattr(wan, "predict", recording_predict)
    applied = []
    job.on_step = lambda stage, step, steps, parts: applied.append((parts, _lora_grads(wan)))
    job.tune_motion()

    assert len(seen) == 1 and len(applied) == 1
    step = seen[0]
    expected = _expected_positions(rope, kept, total)
    if expected is None:
        assert step["positions"] is None
    else:
        assert torch.equal(step["positions"].double(), expected)
    # the noisy latents are those of the kept frames: x_t = (1 - s) x0 + s n with s = t / T
    s = (step["timesteps"] / wan.num_train_timesteps).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(step["noisy"], (1 - s) * latents[:, :, kept] + s * noises[0])
    parts, grads = applied[0]
    assert parts["motion"] > 0.01
    assert parts["fm"] == pytest.approx(step["fm"], rel=1e-5) and parts["motion"] == pytest.approx(step["motion"],
                                                                                                  rel=1e-5)
    assert list(grads) and sum(g.abs().sum() for g in step["grads"]) > 0  # lora_B's (lora_A's wait for B to move)
    for got, want in zip(grads.values(), step["grads"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    logged = [json.loads(line) for line in job.run.path("log.jsonl").read_text().splitlines()]
    [logged_step] = [e for e in logged if e["event"] == "step"]
    assert (logged_step["fm"], logged_step["motion"]) == (parts["fm"], parts["motion"])


def test_the_motion_loss_reaches_the_lora_gradient(wan, tiny_wan_dir, tmp_path):
    """The gradient is that of fm + w * motion: it moves with `motion.motion_weight`, linearly."""
    grads = {}
    for weight in (0.0, 1.0, 2.0):
        job = _job(wan, tiny_wan_dir, tmp_path, motion_weight=weight)
        job.on_step = lambda stage, step, steps, parts, w=weight: grads.__setitem__(w, _lora_grads(wan))
        job.tune_motion()
        wan.experts[0].module.delete_adapters("motion")  # the next run starts from the same fresh LoRA
    names = list(grads[0.0])
    change = torch.cat([(grads[1.0][n] - grads[0.0][n]).flatten() for n in names])
    again = torch.cat([(grads[2.0][n] - grads[1.0][n]).flatten() for n in names])
    assert change.abs().max() > 1e-3 * torch.cat([grads[0.0][n].flatten() for n in names]).abs().max()
    torch.testing.assert_close(again, change, rtol=1e-3, atol=1e-6)
