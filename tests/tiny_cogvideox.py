"""Builds tiny random-weight CogVideoX pipeline directories offline, in diffusers' save_pretrained layout.

Every class is the one a real checkpoint uses (a T5 text encoder, AutoencoderKLCogVideoX,
CogVideoXTransformer3DModel, CogVideoXDDIMScheduler with v-prediction), so loading goes through the same code path
as the real models; only the sizes are tiny and the tokenizer is a word-level fast tokenizer over a fixed vocabulary
(transformers 5's T5Tokenizer only takes a Unigram vocabulary; the pipeline only calls it). Three
layouts: "5b" (3D RoPE built in the pipeline, CogVideoX-5B), "2b" (absolute sin-cos position embeddings in the
patch embedding, CogVideoX-2B) and "1.5" (RoPE and a temporal patch of 2, CogVideoX1.5-5B).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

WORDS = (
    "a", "tiger", "walks", "through", "snow", "robot", "dog", "runs", "cat", "jumps", "red", "blue", "green",
    "car", "drives", "road", "the", "in", "on", "of", "and", "with", "bird", "flies", "sky",
)
TEXT_LENGTH = 16  # max_text_seq_length: the prompt is padded to this many tokens (real models: 226)
LATENT_CHANNELS = 4
HEADS, HEAD_DIM, LAYERS = 2, 16, 2  # head_dim 16: RoPE splits it 4 (time) + 6 (rows) + 6 (columns)


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _text_encoder(tokenizer: PreTrainedTokenizerFast) -> T5EncoderModel:
    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    ))


def _vae() -> AutoencoderKLCogVideoX:
    """8x spatial (four blocks, three downsampling), 4x temporal, as the real VAE; 8 channels per block."""
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=LATENT_CHANNELS, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4, sample_height=32, sample_width=32,
    )


def _transformer(layout: str) -> CogVideoXTransformer3DModel:
    rope = layout != "2b"
    return CogVideoXTransformer3DModel(
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS, time_embed_dim=8, text_embed_dim=32, num_layers=LAYERS, sample_width=4,
        sample_height=4, sample_frames=9, patch_size=2, patch_size_t=2 if layout == "1.5" else None,
        temporal_compression_ratio=4, max_text_seq_length=TEXT_LENGTH, use_rotary_positional_embeddings=rope,
    )


def build_tiny_cogvideox_pipeline(path: Path, layout: str = "5b", seed: int = 0) -> Path:
    """Write a tiny CogVideoXPipeline to `path` (2 layers of 2 heads x 16 channels, a 4-channel VAE with 8x / 4x
    strides). The scheduler is the released one's kind: v-prediction on scaled-linear betas with zero terminal SNR
    (CogVideoX-5B: snr_shift_scale 1; CogVideoX-2B: 3)."""
    if layout not in ("5b", "2b", "1.5"):
        raise ValueError(f"unknown layout {layout!r}")
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, snr_shift_scale=3.0 if layout == "2b" else 1.0, timestep_spacing="trailing",
        clip_sample=False, set_alpha_to_one=True,
    )
    CogVideoXPipeline(tokenizer=tokenizer, text_encoder=_text_encoder(tokenizer), vae=_vae(),
                      transformer=_transformer(layout), scheduler=scheduler).save_pretrained(path)
    return path
