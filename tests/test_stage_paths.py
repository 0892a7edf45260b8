"""Stage paths that a benchmark method or an app takes: no spatial stage, and a stage resumed in the same process."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file
from test_cli import moving_square

from follow_your_motion.bench.methods import get_method
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video, write_video


@pytest.fixture
def cfg(tiny_wan_dir, tmp_path):
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    path = tmp_path / "settings.yaml"
    path.write_text(tiny_config(4))
    return resolve_config({"reference": str(ref), "prompt": "a robot walks", "model": {"source": str(tiny_wan_dir)}},
                          path)


def test_full_lora_method_runs_without_a_spatial_stage(cfg, tmp_path):
    """`full-lora`: no spatial LoRA, one LoRA on every head; the motion stage must not ask for the spatial one."""
    method_cfg = get_method("full-lora").config(cfg)
    job = Transfer(method_cfg, tmp_path / "run")
    sample = job.all()
    assert not (tmp_path / "run" / "spatial_lora.safetensors").exists()
    state = load_file(str(tmp_path / "run" / "motion_lora.safetensors"))
    assert {k.split(".")[2] for k in state} == {"0", "1"}  # both layers, every head
    assert sample.frames.shape == (9, 32, 32, 3)
    assert read_video(tmp_path / "run" / "samples" / "result.mp4").frames.shape == (9, 32, 32, 3)


def test_a_stopped_stage_resumes_in_the_same_process(cfg, tmp_path):
    job = Transfer(cfg, tmp_path / "run")
    assert job.tune_motion(stop_after=2) is None
    assert job.tune_motion() == [tmp_path / "run" / "motion_lora.safetensors"]
    Transfer(cfg, tmp_path / "whole").tune_motion()
    for adapter in ("spatial", "motion"):
        ours, whole = (load_file(str(tmp_path / d / f"{adapter}_lora.safetensors")) for d in ("run", "whole"))
        assert ours.keys() == whole.keys() and all(torch.equal(ours[k], whole[k]) for k in ours), adapter
