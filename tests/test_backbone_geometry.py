"""The sizes a model takes, read from its config files before any weight loads, are the loaded model's."""

from __future__ import annotations

import pytest
from tiny_cogvideox import build_tiny_cogvideox_pipeline
from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline
from tiny_ltx import build_tiny_ltx_pipeline
from tiny_wan import build_tiny_ti2v_pipeline

from follow_your_motion.backbones import load_backbone, read_geometry

# name -> (family, builder, the (temporal, spatial) strides the pipeline itself works with)
BUILDERS = {
    "wan2.2-ti2v": ("wan", build_tiny_ti2v_pipeline,  # a VAE with other strides than Wan2.1's
                    lambda pipe: (pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial)),
    "ltx": ("ltx", build_tiny_ltx_pipeline,
            lambda pipe: (pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio)),
    "cogvideox": ("cogvideox", build_tiny_cogvideox_pipeline,
                  lambda pipe: (pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial)),
    "cogvideox1.5": ("cogvideox", lambda path: build_tiny_cogvideox_pipeline(path, layout="1.5"),  # 2 per token
                     lambda pipe: (2 * pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial)),
    "hunyuan_video15": ("hunyuan_video15", build_tiny_hunyuan_video15_pipeline,
                        lambda pipe: (pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial)),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_config_geometry_is_the_loaded_geometry(name, tmp_path):
    family, build, strides = BUILDERS[name]
    source = str(build(tmp_path / name))
    backbone = load_backbone(source, family, device="cpu")
    geometry = read_geometry(source, family)
    assert geometry == backbone.geometry
    assert (geometry.temporal_stride, geometry.spatial_stride) == strides(backbone.pipe)


def test_wan_and_toy_geometry(tiny_wan_dir):
    wan = load_backbone(str(tiny_wan_dir), "wan", device="cpu")
    assert read_geometry(str(tiny_wan_dir), "wan") == wan.geometry
    assert (wan.geometry.temporal_stride, wan.geometry.spatial_stride) == (4, 8)
    assert read_geometry(None, "toy") == load_backbone(None, device="cpu").geometry


def test_no_config_at_hand_is_none(tmp_path):
    assert read_geometry("nobody/not-downloaded", "wan") is None
    assert read_geometry(str(tmp_path), "ltx") is None
