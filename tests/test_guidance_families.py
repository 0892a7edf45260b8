"""The guidance hook on every family's own pipeline: the hook sees the method's latent layout, an identity hook
leaves the sample bit-identical (so the layout round trip is exact), and a real guidance runs through each
family's capture and objective (rectified flow, v-prediction; two experts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_cogvideox import build_tiny_cogvideox_pipeline
from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline
from tiny_kandinsky5 import build_tiny_kandinsky5_pipeline
from tiny_ltx import build_tiny_ltx_pipeline
from tiny_wan import build_tiny_wan_pipeline

from follow_your_motion.backbones import load_backbone
from follow_your_motion.config import GuidanceSettings
from follow_your_motion.method.guidance import make_guide

BUILDERS = {
    "wan": build_tiny_wan_pipeline,
    "wan2.2-a14b": lambda path: build_tiny_wan_pipeline(path, boundary_ratio=0.875),
    "cogvideox": build_tiny_cogvideox_pipeline,
    "ltx": build_tiny_ltx_pipeline,
    "hunyuan_video15": build_tiny_hunyuan_video15_pipeline,
    "kandinsky5": build_tiny_kandinsky5_pipeline,
}
FRAMES, STEPS = 9, 3


@pytest.fixture(scope="module", params=list(BUILDERS))
def backbone(request, tmp_path_factory):
    return load_backbone(str(BUILDERS[request.param](tmp_path_factory.mktemp(request.param) / "pipe")))


class Identity:
    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def velocity(self, step, timestep, output):
        self.shapes.append(tuple(output.shape))
        return output

    def latents(self, step, timestep, latents):
        self.shapes.append(tuple(latents.shape))
        return latents


def _size(backbone) -> int:
    """Two token rows and columns: one token per frame would have no motion to guide."""
    return 2 * backbone.geometry.size_multiple


def _generate(backbone, **extra) -> np.ndarray:
    size = _size(backbone)
    return backbone.generate("a cat walks", negative_prompt="", num_frames=FRAMES, height=size, width=size,
                             steps=STEPS, guidance=2.0, seed=0, adapter_scales={}, **extra)


def _reference(backbone) -> torch.Tensor:
    video = torch.rand(3, FRAMES, _size(backbone), _size(backbone), generator=torch.Generator().manual_seed(1)) * 2 - 1
    return backbone.encode_video(video)


def test_an_identity_hook_sees_the_methods_layout_and_changes_nothing(backbone):
    plain = _generate(backbone)
    hook = Identity()
    assert np.array_equal(_generate(backbone, step_hook=hook), plain)
    latent_shape = tuple(_reference(backbone).shape)
    assert hook.shapes == [latent_shape] * (2 * STEPS - 1)
    assert "step" not in vars(backbone.pipe.scheduler)


@pytest.mark.parametrize("method", ["ditflow", "flow"])
def test_a_guidance_runs_through_the_familys_sampler_and_moves_the_sample(backbone, method):
    settings = GuidanceSettings(method=method, ditflow={"guided_fraction": 1.0, "inner_steps": 2},
                                flow={"guided_fraction": 1.0, "inner_steps": 2})
    guide = make_guide(backbone, settings, _reference(backbone), "a cat walks", steps=STEPS, seed=0)
    guided = _generate(backbone, step_hook=guide)
    assert [record["step"] for record in guide.history] == list(range(1, STEPS))
    assert all(np.isfinite(record["losses"]).all() for record in guide.history)
    assert not np.array_equal(guided, _generate(backbone))
