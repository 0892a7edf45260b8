"""`model.offload` (diffusers' `enable_model_cpu_offload`) through a whole `fym transfer`: stages 1-3 and the
generation compute what they compute without it.

On the CPU the execution device is the CPU, so no weight changes device, but the real code path runs: diffusers
installs accelerate's offload hook on every component, each forward goes through it (which moves the module to
the execution device `cpu:0` and the previous component back to the CPU), training runs through the hooked
transformer, and `Transfer` leaves the encoders unparked. What a GPU adds (weights crossing PCIe, the LoRA and its
AdamW state on the accelerator) is not exercised here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.hooks import CpuOffload
from conftest import tiny_config
from safetensors.torch import load_file
from test_cli import moving_square, ok

from follow_your_motion.video import read_video, write_video


def transfer(root: Path, pipe: Path, name: str, offload: bool) -> Path:
    config = root / f"{name}.yaml"
    config.write_text(tiny_config(2) + f"model: {{offload: {str(offload).lower()}}}\n")
    ok("transfer", root / "ref.mp4", "-p", "a robot walks", "--out", root / name, "--model", pipe, "--config", config)
    return root / name


def test_offload_tunes_and_generates_as_without(tiny_wan_dir, tmp_path, monkeypatch: pytest.MonkeyPatch):
    write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    hooked: Counter[str] = Counter()
    original = CpuOffload.pre_forward

    def counting(self, module, *args, **kwargs):
        hooked[type(module).__name__] += 1
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(CpuOffload, "pre_forward", counting)
    offloaded = transfer(tmp_path, tiny_wan_dir, "offload", offload=True)
    # every component ran through its offload hook: the transformer in stages 1-3 and generation, the encoders
    assert set(hooked) == {"WanTransformer3DModel", "UMT5EncoderModel", "AutoencoderKLWan"}
    assert hooked["WanTransformer3DModel"] > 2 * 2 + 2 * 2  # more than the tuning steps alone: stage 1, sampling
    hooked.clear()
    plain = transfer(tmp_path, tiny_wan_dir, "plain", offload=False)
    assert not hooked

    for adapter in ("spatial", "motion"):
        a, b = (load_file(run / f"{adapter}_lora.safetensors") for run in (offloaded, plain))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), adapter
    videos = [read_video(run / "samples" / "result.mp4").frames for run in (offloaded, plain)]
    assert np.array_equal(*videos)
