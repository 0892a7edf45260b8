"""Interrupt + resume reproduces the uninterrupted run bit for bit; checkpoints are pruned and validated."""

from __future__ import annotations

import json
import re

import pytest
import torch

from follow_your_motion.backbones.wan import WanBackbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir

SELECTION = {0: [0, 1], 1: [2]}



def _settings(**overrides) -> MotionSettings:
    values = dict(
        steps=6, keep_frames=3, lr=1e-2, checkpoint_every=3, warmup_steps=4, weight_decay=0.5,
        sampling="uniform-random-phase", rope="index", seed=11,
    )
    return MotionSettings(**(values | overrides))


def _fresh(tiny_wan_dir, selection=SELECTION):
    """A new backbone with the motion adapter, as a new process would build it."""
    wan = WanBackbone.load(str(tiny_wan_dir))
    add_masked_lora(wan.experts[0], "motion", selection, rank=4, alpha=4, seed=3)
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 32, 32, generator=gen) * 2 - 1
    return wan, wan.encode_video(video), wan.encode_prompt("a tiger walks through snow")


def _train(
    tiny_wan_dir, run: RunDir, settings: MotionSettings, stop_after: int | None = None, selection=SELECTION
):
    wan, lat, text = _fresh(tiny_wan_dir, selection)
    return train_adapter(
        wan, wan.experts[0], run, "motion", "motion", settings, motion_inputs(lat, text, settings), motion_weight=1.0,
        stop_after=stop_after,
    )


def _events(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in (run.root / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("batch_size", "grad_accum"), [(1, 1), (2, 2)])
def test_resume_is_bit_identical(tiny_wan_dir, tmp_path, batch_size, grad_accum):
    settings = _settings(batch_size=batch_size, grad_accum=grad_accum)
    run_a = RunDir(tmp_path / "a")
    state_a = _train(tiny_wan_dir, run_a, settings)

    run_b = RunDir(tmp_path / "b")
    state_b3 = _train(tiny_wan_dir, run_b, settings, stop_after=3)
    assert [step for step, _ in run_b.checkpoints("motion")] == [3]
    assert not any(e["event"] == "resume" for e in _events(run_b))
    state_b = _train(tiny_wan_dir, run_b, settings)

    assert set(state_a) == set(state_b)
    assert len(state_a) == 2 * 4 * 2  # 2 layers x (q, k, v, out) x (A, B)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    # the interrupted run really stopped half-way, and training moved the weights afterwards
    assert any(not torch.equal(state_b3[key], state_b[key]) for key in state_a)

    resumes = [e for e in _events(run_b) if e["event"] == "resume"]
    assert len(resumes) == 1
    assert resumes[0]["step"] == 3 and resumes[0]["stage"] == "motion"
    steps_b = [e["step"] for e in _events(run_b) if e["event"] == "step"]
    assert steps_b == [1, 2, 3, 4, 5, 6]
    # the losses and learning rates logged after resuming are those of the uninterrupted run
    logged_a = [(e["step"], e["lr"], e["fm"], e["motion"]) for e in _events(run_a) if e["event"] == "step"]
    logged_b = [(e["step"], e["lr"], e["fm"], e["motion"]) for e in _events(run_b) if e["event"] == "step"]
    assert logged_a == logged_b
    assert [step for step, _ in run_a.checkpoints("motion")] == [3, 6]
    assert [step for step, _ in run_b.checkpoints("motion")] == [3, 6]


def test_resume_at_final_step_trains_nothing(tiny_wan_dir, tmp_path):
    settings = _settings(steps=2, checkpoint_every=1)
    run = RunDir(tmp_path / "run")
    first = _train(tiny_wan_dir, run, settings)
    again = _train(tiny_wan_dir, run, settings)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert [e["step"] for e in _events(run) if e["event"] == "step"] == [1, 2]


def test_only_last_two_checkpoints_kept(tiny_wan_dir, tmp_path):
    run = RunDir(tmp_path / "run")
    _train(tiny_wan_dir, run, _settings(steps=5, checkpoint_every=1, warmup_steps=0))
    found = run.checkpoints("motion")
    assert [step for step, _ in found] == [4, 5]
    folders = sorted(p.name for p in run.checkpoint_dir("motion").iterdir())
    assert folders == ["step-0000004", "step-0000005"]  # no leftover temporary folders either
    for _, folder in found:
        assert sorted(p.name for p in folder.iterdir()) == ["COMPLETE", "lora.safetensors", "train_state.pt"]


def test_incomplete_checkpoint_is_ignored(tiny_wan_dir, tmp_path):
    settings = _settings(steps=4, checkpoint_every=2)
    run = RunDir(tmp_path / "run")
    _train(tiny_wan_dir, run, settings, stop_after=2)
    # a half-written newer checkpoint (no COMPLETE marker) must not be resumed from
    half = run.checkpoint_dir("motion") / "step-0000003"
    half.mkdir()
    (half / "lora.safetensors").write_bytes(b"garbage")
    assert [step for step, _ in run.checkpoints("motion")] == [2]
    _train(tiny_wan_dir, run, settings)
    resumes = [e for e in _events(run) if e["event"] == "resume"]
    assert [e["step"] for e in resumes] == [2]


@pytest.mark.parametrize("keep_bytes", [0, 5, "half"])
def test_corrupt_lora_checkpoint_names_path(tiny_wan_dir, tmp_path, keep_bytes):
    settings = _settings()
    run = RunDir(tmp_path / "run")
    _train(tiny_wan_dir, run, settings, stop_after=3)
    (_, folder), = run.checkpoints("motion")
    path = folder / "lora.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if keep_bytes == "half" else data[:keep_bytes])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        _train(tiny_wan_dir, run, settings)


def test_corrupt_train_state_names_checkpoint(tiny_wan_dir, tmp_path):
    settings = _settings()
    run = RunDir(tmp_path / "run")
    _train(tiny_wan_dir, run, settings, stop_after=3)
    (_, folder), = run.checkpoints("motion")
    state = folder / "train_state.pt"
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        _train(tiny_wan_dir, run, settings)


def test_resume_with_a_different_adapter_layout_fails_clearly(tiny_wan_dir, tmp_path):
    settings = _settings()
    run = RunDir(tmp_path / "run")
    _train(tiny_wan_dir, run, settings, stop_after=3)
    with pytest.raises(ValueError, match="do not match"):
        _train(tiny_wan_dir, run, settings, selection={0: [3]})
