"""Builds a tiny random-weight Wan2.1 pipeline directory offline, in diffusers' save_pretrained layout.

Every class is the one a real Wan2.1-T2V checkpoint uses (UMT5 text encoder, AutoencoderKLWan,
WanTransformer3DModel, UniPC flow scheduler), so loading goes through the same code path as the real
model; only the sizes are tiny and the tokenizer is a word-level one built from a fixed vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

WORDS = (
    "a", "tiger", "walks", "through", "snow", "robot", "dog", "runs", "cat", "jumps", "red", "blue", "green",
    "car", "drives", "road", "the", "in", "on", "of", "and", "with", "bird", "flies", "sky", "person",
    "dances", "beach",
)


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _tiny_transformer(num_heads: int, num_layers: int, channels: int = 16, in_channels: int | None = None,
                      image_dim: int | None = None) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=num_heads, attention_head_dim=12,
        in_channels=in_channels or channels, out_channels=channels, text_dim=32, freq_dim=32, ffn_dim=32,
        num_layers=num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        image_dim=image_dim, added_kv_proj_dim=None if image_dim is None else num_heads * 12,
    )


def _tiny_text_encoder(tokenizer: PreTrainedTokenizerFast) -> UMT5EncoderModel:
    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )


def build_tiny_ti2v_pipeline(path: Path, seed: int = 0) -> Path:
    """Write a tiny Wan2.2-TI2V-5B layout to `path`: the Wan2.2 VAE's shape (48 latent channels, a 2x2 pixel
    patch before a residual encoder: 16x spatial, 4x temporal stride), a 48-channel transformer, per-token
    timesteps (`expand_timesteps`)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    vae = AutoencoderKLWan(
        base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
    )
    WanPipeline(tokenizer=tokenizer, text_encoder=_tiny_text_encoder(tokenizer), vae=vae,
                transformer=_tiny_transformer(4, 2, channels=48), scheduler=scheduler,
                expand_timesteps=True).save_pretrained(path)
    return path


def build_tiny_wan_i2v_pipeline(path: Path, boundary_ratio: float | None = None, seed: int = 0) -> Path:
    """Write a tiny WanImageToVideoPipeline to `path`: Wan2.1-I2V's layout (36 input channels: 16 latent, 4 mask,
    16 first-frame condition; a CLIP image encoder whose embeddings the transformer attends to), or with
    `boundary_ratio` Wan2.2-I2V-A14B's (two experts, no image encoder)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    if boundary_ratio is None:
        image = {"image_encoder": CLIPVisionModel(CLIPVisionConfig(
                     hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                     intermediate_size=16, patch_size=1)),
                 "image_processor": CLIPImageProcessor(crop_size=32, size=32),
                 "transformer": _tiny_transformer(4, 2, in_channels=36, image_dim=4)}
    else:
        image = {"transformer": _tiny_transformer(4, 2, in_channels=36),
                 "transformer_2": _tiny_transformer(4, 2, in_channels=36), "boundary_ratio": boundary_ratio}
    WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=_tiny_text_encoder(tokenizer), vae=vae,
                            scheduler=scheduler, **image).save_pretrained(path)
    return path


def build_tiny_wan_pipeline(path: Path, num_heads: int = 4, num_layers: int = 2, seed: int = 0,
                            boundary_ratio: float | None = None) -> Path:
    """Write a tiny WanPipeline to `path` (4 heads of 12 channels, 2 layers, VAE with 8x/4x strides). With
    `boundary_ratio`, a Wan2.2-T2V-A14B layout: a second transformer (`transformer_2`, the low-noise expert, its
    own random weights) and the ratio where the pipeline switches to it."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = _tiny_text_encoder(tokenizer)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = _tiny_transformer(num_heads, num_layers)
    experts = {} if boundary_ratio is None else {"transformer_2": _tiny_transformer(num_heads, num_layers),
                                                 "boundary_ratio": boundary_ratio}
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler,
        **experts,
    )
    pipe.save_pretrained(path)
    return path
