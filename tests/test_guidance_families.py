"""The guidance hook on every family's own pipeline: the hook sees the method's latent layout, an identity hook
leaves the sample bit-identical (so the layout round trip is exact), and a real guidance runs through each
family's capture and objective (rectified flow, v-prediction; two experts)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler
from tiny_cogvideox import build_tiny_cogvideox_pipeline
from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline
from tiny_kandinsky5 import build_tiny_kandinsky5_pipeline
from tiny_ltx import build_tiny_ltx_pipeline
from tiny_ltx2 import build_tiny_ltx2_pipeline
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
    "ltx2": build_tiny_ltx2_pipeline,
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

    def end(self):
        pass


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
    most = (STEPS - 1) / STEPS  # every step after the first, which starts from the drawn noise
    settings = GuidanceSettings(method=method, ditflow={"guided_fraction": most, "inner_steps": 2},
                                flow={"guided_fraction": most, "inner_steps": 2})
    guide = make_guide(backbone, settings, _reference(backbone), "a cat walks", steps=STEPS, seed=0)
    guided = _generate(backbone, step_hook=guide)
    assert [record["step"] for record in guide.history] == list(range(1, STEPS))
    assert all(np.isfinite(record["losses"]).all() for record in guide.history)
    assert not np.array_equal(guided, _generate(backbone))


class Shift:
    """Moves the latents the step after `step` starts from by a constant, and records every scheduler step."""

    def __init__(self, scheduler, step: int) -> None:
        self.step, self.calls, self.states = step, [], {}
        original = scheduler.step

        def recorded(output, timestep, sample, *args, **kwargs):
            self.states[len(self.calls)] = copy.deepcopy(scheduler)  # as the scheduler is before this step
            result = original(output, timestep, sample, *args, **kwargs)
            self.calls.append((output.clone(), timestep, sample.clone(), result[0].clone()))
            return result

        scheduler.step = recorded  # guided_steps wraps this and removes it when sampling ends

    def velocity(self, step, timestep, output):
        return output

    def latents(self, step, timestep, latents):
        return latents + 0.5 if step == self.step + 1 else latents

    def end(self):
        pass


def test_a_multistep_sampler_steps_from_the_latents_a_hook_moved(tmp_path):
    """Wan samples with UniPC, whose corrector would rebuild step k+1's sample from the latents it stepped to at
    step k: after a hook moves them, step k+1 must start from the moved latents exactly, as the scheduler does
    stepping from them with no memory of the unmoved ones."""
    backbone = load_backbone(str(build_tiny_wan_pipeline(tmp_path / "pipe")))
    scheduler = backbone.pipe.scheduler
    assert isinstance(scheduler, UniPCMultistepScheduler)
    k, steps = 1, 4
    hook = Shift(scheduler, k)
    size = _size(backbone)
    backbone.generate("a cat walks", negative_prompt="", num_frames=FRAMES, height=size, width=size, steps=steps,
                      guidance=2.0, seed=0, adapter_scales={}, step_hook=hook)
    assert len(hook.calls) == steps
    stepped_to, moved_from = hook.calls[k][3], hook.calls[k + 1][2]
    assert torch.equal(moved_from, stepped_to + 0.5)  # the pipeline hands the moved latents to step k+1
    output, timestep, _, result = hook.calls[k + 1]
    direct = copy.deepcopy(hook.states[k + 1])
    direct.last_sample = None
    assert torch.equal(result, UniPCMultistepScheduler.step(direct, output, timestep, moved_from, return_dict=False)[0])
    unmoved = copy.deepcopy(hook.states[k + 1])
    unmoved.last_sample = stepped_to
    assert not torch.allclose(result, UniPCMultistepScheduler.step(unmoved, output, timestep, moved_from,
                                                                   return_dict=False)[0])
