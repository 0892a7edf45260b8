"""Builds a tiny random-weight LTX-Video pipeline directory offline, in diffusers' save_pretrained layout.

Every class is the one a real LTX-Video 0.9.x checkpoint uses (T5 text encoder and tokenizer,
AutoencoderKLLTXVideo, LTXVideoTransformer3DModel, FlowMatchEulerDiscreteScheduler with LTX's
resolution-dependent shift), so loading goes through the same code path as the real model. Only the sizes
are tiny, and the tokenizer's vocabulary is a fixed list of whole words (T5's Unigram model over "▁word"
pieces). The VAE keeps the real compression (patch 4 and three 2x stages: 32x in space, 8x in time), and
its latent statistics are not the identity, so a missing normalisation shows in the tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
from tiny_wan import WORDS
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

HEADS, HEAD_DIM, LAYERS = 4, 8, 2  # inner width 32: 32 % 6 = 2 padding channels in the RoPE, like the real 2048
LATENT_CHANNELS = 8
TEXT_DIM = 32
# The scheduler config of Lightricks/LTX-Video (diffusers' scripts/convert_ltx_to_diffusers.py).
SCHEDULER = {"base_image_seq_len": 1024, "base_shift": 0.95, "max_image_seq_len": 4096, "max_shift": 2.05,
             "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.1, "use_dynamic_shifting": True}


def _tokenizer() -> T5TokenizerFast:
    """T5's tokenizer (a Unigram model) over whole words: <pad> 0, </s> 1, <unk> 2, then "▁word" pieces."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0) for w in dict.fromkeys(WORDS)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=128)


def _text_encoder(tokenizer: T5TokenizerFast) -> T5EncoderModel:
    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    ))


def _vae(seed: int) -> AutoencoderKLLTXVideo:
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=4,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    vae.latents_mean.copy_(0.1 * torch.randn(LATENT_CHANNELS, generator=gen))
    vae.latents_std.copy_(0.5 + torch.rand(LATENT_CHANNELS, generator=gen))
    return vae


def build_tiny_ltx_pipeline(path: Path, seed: int = 0) -> Path:
    """Write a tiny LTXPipeline to `path`: 2 layers of 4 heads x 8 channels, a VAE with LTX-Video's 32x / 8x
    compression (8 latent channels), a one-layer T5, LTX's scheduler config."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    transformer = LTXVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, cross_attention_dim=HEADS * HEAD_DIM,
        num_layers=LAYERS, caption_channels=TEXT_DIM,
    )
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(seed),
                       text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer, transformer=transformer)
    pipe.save_pretrained(path)
    return path
