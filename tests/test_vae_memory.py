"""VAE memory at real size: HunyuanVideo 1.5 tiles its VAE by default (untiled, encoding its recipe clip holds about
140 GiB; `fym plan` shows the tiled peaks), and what tiling changes, measured on the tiny pipeline."""

from __future__ import annotations

import pytest
import torch
from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline

from follow_your_motion.backbones import load_backbone
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config

TILE = 64  # pixels (48 apart): the tiny clip is tiled as the recipe's 480 x 848 is by 256-pixel tiles


@pytest.fixture(scope="module")
def tiny_hunyuan(tmp_path_factory):
    return load_backbone(str(build_tiny_hunyuan_video15_pipeline(tmp_path_factory.mktemp("hv15") / "pipe")))


def test_hunyuan_tiles_its_vae_by_default_and_the_setting_turns_it_off(tiny_hunyuan):
    assert tiny_hunyuan.vae_tiling and tiny_hunyuan.pipe.vae.use_tiling
    tiny_hunyuan.set_vae_tiling(False)
    assert not tiny_hunyuan.pipe.vae.use_tiling
    tiny_hunyuan.set_vae_tiling(True)
    assert resolve_config({"model": {"vae_tiling": False}}).model.vae_tiling is False


def test_tiling_changes_latents_and_decoded_frames_by_at_most_the_measured_tolerance(tiny_hunyuan):
    """What tiling changes, measured: each tile sees only its own pixels (plus the overlap that is blended), so
    values near the seams differ. On the tiny random VAE: latents by up to 2.21 (they are about unit scale), decoded
    frames by up to 1.48 of the [-1, 1] range; random weights have no smoothness across a seam, so this is the
    worst case, not what the released VAE does (its own pipeline's example enables tiling). Untiled, the released
    VAE needs about 140 GiB for the recipe clip; `model.vae_tiling: false` gives that back to users who have it."""
    vae = tiny_hunyuan.pipe.vae
    video = torch.rand(3, 5, 112, 160, generator=torch.Generator().manual_seed(0)) * 2 - 1
    untiled, tiled = {}, {}
    for result, on in ((untiled, False), (tiled, True)):
        tiny_hunyuan.set_vae_tiling(on)
        if on:
            vae.enable_tiling(tile_sample_min_height=TILE, tile_sample_min_width=TILE,
                              tile_latent_min_height=TILE // 16, tile_latent_min_width=TILE // 16)
        with torch.no_grad():
            result["latents"] = tiny_hunyuan.encode_video(video)
            result["frames"] = vae.decode(result["latents"] / vae.config.scaling_factor).sample
    vae.enable_tiling(tile_sample_min_height=256, tile_sample_min_width=256, tile_latent_min_height=16,
                      tile_latent_min_width=16)
    differences = {k: (tiled[k] - untiled[k]).abs().max().item() for k in untiled}
    assert 0 < differences["latents"] <= 2.25 and 0 < differences["frames"] <= 1.5, differences


def test_a_model_without_a_vae_refuses_vae_tiling():
    backbone = load_backbone(None)
    with pytest.raises(InputError, match="vae_tiling"):
        backbone.set_vae_tiling(True)
