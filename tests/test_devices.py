"""`--device auto`, the default everywhere: CUDA, then Apple MPS where it runs the job, else the CPU, said in one
line; a real checkpoint on the CPU is told what the cost model predicts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from follow_your_motion import cost, devices
from follow_your_motion.cli import app
from follow_your_motion.precedence import resolve_config
from follow_your_motion.video import write_video


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100")
    with caplog.at_level("INFO", "follow_your_motion"):
        assert devices.pick_device("auto") == "cuda"
    assert caplog.messages == ["device: cuda (--device auto: CUDA is available (NVIDIA H100); --device chooses)"]


def test_auto_takes_mps_only_where_it_runs_the_dtype(monkeypatch, no_accelerator):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(devices, "mps_works", lambda dtype: dtype == "float32")
    assert devices.pick_device("auto", "float32") == "mps"
    assert devices.pick_device("auto", "bfloat16") == "cpu"


def test_a_given_device_is_kept_and_not_announced(caplog):
    with caplog.at_level("INFO", "follow_your_motion"):
        assert devices.pick_device("cuda:1") == "cuda:1"
    assert caplog.messages == []


def test_auto_is_the_default_everywhere(monkeypatch):
    from follow_your_motion.app.settings import TransferRequest, resolve_request
    from follow_your_motion.app.ui import default_device

    assert resolve_config({}).model.device == "auto"
    assert resolve_request(TransferRequest(None, "a red circle", "a blue square")).model.device == "auto"
    monkeypatch.setattr(devices, "pick_device", lambda requested="auto", dtype="float32": f"picked {requested}")
    assert default_device() == "picked auto"  # the app asks the same function


def test_cli_says_the_device_and_what_a_real_model_costs_on_the_cpu(tiny_wan_dir, tmp_path, no_accelerator):
    ref = write_video(tmp_path / "ref.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    config = tmp_path / "c.yaml"
    config.write_text("video: {frames: 9, height: 32, width: 32}\nheads: {num_queries: 16}\n")
    result = CliRunner().invoke(app, ["classify", str(ref), "-p", "a robot", "-m", str(tiny_wan_dir), "-o",
                                      str(tmp_path / "run"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "note: device: cpu (--device auto: no CUDA or Apple MPS device found; --device chooses)" in lines
    cfg = resolve_config({"model": {"source": str(tiny_wan_dir)}}, config)
    tflop = cost.transfer_flops(cost.wan_config(str(tiny_wan_dir)), cfg) / 1e12
    (note,) = [line for line in lines if "runs on the CPU" in line]
    assert re.fullmatch(rf"note: {re.escape(str(tiny_wan_dir))} runs on the CPU: the cost model predicts {tflop:.3g} "
                        r"TFLOP of transformer work for this run, about [\d.e+]+ (s|minutes|hours|days) at the "
                        r"[\d.e+]+ GFLOP/s this CPU multiplies bfloat16 matrices at \(encoders and VAE not counted\); "
                        r"--device cuda if there is a GPU", note), note
    toy = CliRunner().invoke(app, ["classify", str(ref), "-p", "a red circle", "-o", str(tmp_path / "toy")])
    assert toy.exit_code == 0, toy.output
    assert "runs on the CPU" not in toy.stderr  # the toy model is made for the CPU


def test_transfer_flops_counts_every_stage_at_the_run_settings():
    """The published 14B at the Wan recipe: stage 1, 3000 one-frame and 2000 five-frame steps, 50 guided steps."""
    model = cost.MODELS["wan2.1-14b"]
    cfg = resolve_config({"model": {"source": "Wan-AI/Wan2.1-T2V-14B-Diffusers"}})
    frames, rows, cols = model.token_grid(81, 480, 832)
    clip = cost.Shapes(frames, rows, cols)
    expected = (cost.classify_flops(model, clip, 1024).total
                + 3000 * cost.train_flops(model, cost.Shapes(1, rows, cols, rank=128), True).total
                + 2000 * cost.train_flops(model, cost.Shapes(5, rows, cols, rank=128, frozen_rank=128), True).total
                + 50 * 2 * cost.forward_flops(model, clip).total)
    assert cost.wan_config("Wan-AI/Wan2.1-T2V-14B-Diffusers") == model
    assert cost.transfer_flops(model, cfg) == expected


def test_a_sharded_benchmark_process_picks_its_own_gpu(monkeypatch):
    """`auto` under torchrun: each process takes the GPU of its local rank, not all of them the first."""
    from follow_your_motion.bench.sharding import Processes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100")
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert Processes(rank=1, world=2, local_rank=1).device("auto") == "cuda:1"
    assert chosen == [1]
    assert Processes(rank=0, world=1, local_rank=0).device("auto") == "cuda"
