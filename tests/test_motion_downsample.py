"""Stage 3 on a shrunk clip (`motion.downsample`): the tokens of a clip shrunk s times take the positions the
full-size grid has every s-th row and column, the toy's coordinate channels the full frame's, and a transfer
tunes motion on the shrunk clip's latents while stage 2 and generation keep the full size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from safetensors.torch import load_file
from test_cli import moving_square

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import resize_frames, to_tensor, write_video

PROMPT = "a robot walks"


def _tables(rope, hidden: torch.Tensor, frame_positions=None, stride: int = 1) -> torch.Tensor:
    """Wan's cos and sin tables for `hidden`, as (2, frames, rows, cols, head width)."""
    rope.frame_positions, rope.spatial_stride = frame_positions, stride
    try:
        cos, sin = rope(hidden)
    finally:
        rope.frame_positions, rope.spatial_stride = None, 1
    _, _, frames, h, w = hidden.shape
    pt, ph, pw = rope.inner.patch_size
    return torch.stack([cos, sin]).view(2, frames // pt, h // ph, w // pw, -1)


@pytest.mark.parametrize("stride", [2, 3])
def test_wan_spaced_tokens_get_every_strideth_row_and_column_of_the_full_grid(wan, stride):
    rope = wan.experts[0].module.rope
    pt, ph, pw = rope.inner.patch_size
    small = torch.zeros(1, 4, 3 * pt, 2 * ph, 3 * pw)
    full = torch.zeros(1, 4, 3 * pt, 2 * ph * stride, 3 * pw * stride)
    spaced, stock = _tables(rope, small, stride=stride), _tables(rope, full)
    assert torch.equal(spaced, stock[:, :, ::stride, ::stride])
    assert not torch.equal(spaced, _tables(rope, small))
    kept = torch.tensor([0, 2])  # with replaced frame positions too: the kept frames' rows of the full grid
    both = _tables(rope, small[:, :, : 2 * pt], kept.double(), stride)
    assert torch.equal(both, stock[:, kept][:, :, ::stride, ::stride])


def test_wan_predict_spaces_the_tokens_for_one_call(wan):
    expert = wan.experts[0]
    latents = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    text = wan.encode_prompt(PROMPT)
    t = torch.tensor([500.0])
    with torch.no_grad():
        stock = wan.predict(expert, latents, t, text)
        spaced = wan.predict(expert, latents, t, text, spatial_stride=2)
        with pytest.raises(InputError, match="3 frame positions"):
            wan.predict(expert, latents, t, text, torch.arange(3.0), spatial_stride=2)
        again = wan.predict(expert, latents, t, text)
    assert (stock - spaced).abs().max() > 1e-4
    assert torch.equal(stock, again) and expert.module.rope.spatial_stride == 1  # restored, also after a failure


def test_toy_coordinates_of_a_shrunk_frame_are_its_pixels_centres_on_the_full_frame():
    full = ToyBackbone.coordinates(torch.zeros(1, 3, 2, 32, 32))
    assert torch.equal(full[0, 0, 0, 0], torch.linspace(-1, 1, 32))  # stride 1: the pretrained channels
    for stride in (2, 4):
        shrunk = ToyBackbone.coordinates(torch.zeros(1, 3, 2, 32 // stride, 32 // stride), stride)
        pooled = F.avg_pool2d(full[0].transpose(0, 1), stride).transpose(0, 1)  # (2, T, h, w)
        assert torch.allclose(shrunk[0], pooled, atol=1e-6)


# -- a transfer --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downsample")
    write_video(tmp / "ref.mp4", moving_square(9), 8)
    (tmp / "settings.yaml").write_text(tiny_config(2))
    return tmp


def _cfg(tiny_wan_dir, tmp, downsample: int):
    return resolve_config({"reference": str(tmp / "ref.mp4"), "prompt": PROMPT,
                           "model": {"source": str(tiny_wan_dir)}, "motion": {"downsample": downsample}},
                          tmp / "settings.yaml")


def test_motion_tunes_on_the_shrunk_clip_and_the_rest_at_full_size(tiny_wan_dir, tmp, tmp_path):
    job = Transfer(_cfg(tiny_wan_dir, tmp, 2), tmp_path / "run")
    calls: list[tuple[int, tuple[int, ...], bool]] = []  # (stride, latents' frames, rows, cols, training)
    predict = job.backbone.predict

    def recording(expert, latents, timesteps, cond, frame_positions=None, spatial_stride=1):
        calls.append((spatial_stride, tuple(latents.shape[2:]), torch.is_grad_enabled()))
        return predict(expert, latents, timesteps, cond, frame_positions, spatial_stride)

    job.backbone.predict = recording
    sample = job.all()
    _, _, frames, rows, cols = job.reference().latents.shape
    trained = {(stride, shape) for stride, shape, grad in calls if grad}
    # stage 2 on single full-size frames, stage 3 on 2 kept frames of the clip shrunk twice, spaced twice
    assert trained == {(1, (1, rows, cols)), (2, (2, rows // 2, cols // 2))}
    assert {(stride, shape) for stride, shape, grad in calls if not grad} == {(1, (frames, rows, cols))}
    assert sample.frames.shape == (9, 32, 32, 3)
    shrunk = job.backbone.encode_video(to_tensor(resize_frames(job.reference().frames, 16, 16)))
    assert torch.equal(job.motion_reference().latents, shrunk)
    assert job.run.config.read_text().count("downsample: 2") == 1


def test_a_resumed_shrunk_motion_stage_is_the_uninterrupted_one(tiny_wan_dir, tmp, tmp_path):
    whole = Transfer(_cfg(tiny_wan_dir, tmp, 2), tmp_path / "whole")
    whole.tune_motion()
    cut = Transfer(_cfg(tiny_wan_dir, tmp, 2), tmp_path / "cut")
    assert cut.tune_motion(stop_after=1) is None
    again = Transfer.open(tmp_path / "cut")  # a new process: the shrunk latents come from the run's cache
    again.tune_motion()
    ours, theirs = (load_file(str(p / "motion_lora.safetensors")) for p in (tmp_path / "cut", tmp_path / "whole"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_downsample_the_size_cannot_take_is_refused_before_anything_is_written(tiny_wan_dir, tmp, tmp_path):
    with pytest.raises(InputError, match=r"motion.downsample 3 needs a height and width that are multiples of 48 "
                                         r"\(the clip is 32x32\)"):
        Transfer(_cfg(tiny_wan_dir, tmp, 3), tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_an_image_to_video_run_tunes_on_the_shrunk_first_frame_too(tmp, tmp_path):
    """Wan2.1-I2V conditions on the reference's first frame: stage 3 gets the shrunk clip's own, encoded at
    the shrunk size (its image latents match the shrunk latents frame for frame)."""
    from tiny_wan import build_tiny_wan_i2v_pipeline

    model = build_tiny_wan_i2v_pipeline(tmp_path / "i2v")
    cfg = resolve_config({"reference": str(tmp / "ref.mp4"), "prompt": PROMPT,
                          "model": {"source": str(model), "dtype": "float32"}, "motion": {"downsample": 2}},
                         tmp / "settings.yaml")
    job = Transfer(cfg, tmp_path / "run")
    assert job.tune_motion() is not None
    full, small = job.reference(), job.motion_reference()
    assert small.cond.tensors["image_latents"].shape[-2:] == small.latents.shape[-2:]
    assert tuple(small.latents.shape[-2:]) == (full.latents.shape[-2] // 2, full.latents.shape[-1] // 2)
    first = resize_frames(full.frames[:1], 16, 16)[0]
    want = job.backbone.encode_image(first, 9, 16, 16).tensors["image_latents"]
    assert torch.equal(small.cond.tensors["image_latents"], want.to(small.cond.tensors["image_latents"]))
