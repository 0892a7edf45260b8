"""Builds tiny random-weight SkyReels-V2 pipelines offline, in diffusers' save_pretrained layout: the classes the
released SkyReels-V2 Diffusers checkpoints use (SkyReelsV2Transformer3DModel, AutoencoderKLWan, UMT5, UniPC flow
scheduler; a CLIP image encoder for image-to-video) at tiny sizes, with tiny_wan's tokenizer and text encoder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    SkyReelsV2ImageToVideoPipeline,
    SkyReelsV2Pipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)
from tiny_wan import _tiny_text_encoder, _tokenizer
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

HEADS, HEAD_DIM, LAYERS = 4, 12, 2


def _tiny_transformer(in_channels: int = 16, image_dim: int | None = None) -> SkyReelsV2Transformer3DModel:
    return SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=in_channels,
        out_channels=16, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim,
        added_kv_proj_dim=None if image_dim is None else HEADS * HEAD_DIM,
    )


def build_tiny_skyreels_v2_pipeline(path: Path, image: bool = False, seed: int = 0) -> Path:
    """Write a tiny SkyReelsV2Pipeline to `path` (4 heads of 12 channels, 2 layers, a VAE with 8x/4x strides), or
    with `image` a SkyReelsV2ImageToVideoPipeline (36 input channels: 16 latent, 4 mask, 16 first-frame
    condition; CLIP image embeddings the transformer attends to). The scheduler's flow_shift (3.0) is not the
    release's, so the backbone's own shift shows."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    parts = {
        "tokenizer": tokenizer, "text_encoder": _tiny_text_encoder(tokenizer),
        "vae": AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                temperal_downsample=[False, True, True]),
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                             num_train_timesteps=1000, flow_shift=3.0),
    }
    if image:
        SkyReelsV2ImageToVideoPipeline(
            transformer=_tiny_transformer(in_channels=36, image_dim=4),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                intermediate_size=16, patch_size=1)),
            image_processor=CLIPImageProcessor(crop_size=32, size=32), **parts).save_pretrained(path)
    else:
        SkyReelsV2Pipeline(transformer=_tiny_transformer(), **parts).save_pretrained(path)
    return path
