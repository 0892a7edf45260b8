"""Builds a tiny random-weight LTX-2 pipeline directory offline, in diffusers' save_pretrained layout.

Every model class is the one `LTX2Pipeline` declares (LTX2VideoTransformer3DModel, AutoencoderKLLTX2Video,
AutoencoderKLLTX2Audio, LTX2Vocoder, LTX2TextConnectors, Gemma3ForConditionalGeneration, FlowMatchEulerDiscreteScheduler
with LTX-2's resolution-dependent shift), so loading goes through the same code path as the released model; only the
sizes are tiny. The Gemma 3 text encoder is built from a config (random weights, a one-layer vision tower it never
uses). The tokenizer is a word-level fast tokenizer over a fixed vocabulary: transformers' `GemmaTokenizer` rebuilds
its own model from the vocabulary when it is reloaded, which loses a word-level one, and the pipeline uses only what
any fast tokenizer has (left padding to `max_sequence_length`, the attention mask). The video VAE keeps the released
compression (32x in space, 8x in time) and non-identity latent statistics, so a missing normalisation shows; the
audio VAE and vocoder are diffusers' own test sizes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ImageToVideoPipeline,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerFast

WORDS = ("a", "robot", "walks", "cat", "jumps", "dog", "runs", "the", "in", "snow", "red", "car")
HEADS, HEAD_DIM, LAYERS = 2, 8, 2  # video stream; inner width 16: 16 % 6 = 4 padding channels in its RoPE
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 4
LATENT_CHANNELS, AUDIO_CHANNELS = 8, 2  # audio tokens: 2 channels x 2 latent mel bins (8 / 4)
TEXT_DIM, TEXT_LAYERS = 16, 1
TEXT_LENGTH = 16  # a short padded prompt keeps the tiny tests fast; the backbone's default is the pipeline's 1024
# The scheduler's shift settings as LTX2Pipeline reads them (its calculate_shift defaults).
SCHEDULER = {"base_image_seq_len": 1024, "base_shift": 0.95, "max_image_seq_len": 4096, "max_shift": 2.05,
             "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True}


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", model_max_length=TEXT_LENGTH)


def _gemma(vocab: int) -> Gemma3ForConditionalGeneration:
    text = {"vocab_size": vocab, "hidden_size": TEXT_DIM, "intermediate_size": 32, "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 64,
            "sliding_window": 16, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 8}
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))


def _transformer(rope_type: str) -> LTX2VideoTransformer3DModel:
    return LTX2VideoTransformer3DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM, cross_attention_dim=HEADS * HEAD_DIM, audio_in_channels=AUDIO_CHANNELS * 2,
        audio_out_channels=AUDIO_CHANNELS * 2, audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM, audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        num_layers=LAYERS, caption_channels=TEXT_DIM, rope_type=rope_type)


def _connectors() -> LTX2TextConnectors:
    return LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32)


def _vae(seed: int) -> AutoencoderKLLTX2Video:
    """Patch 4 and three 2x space-time stages: LTX-2's 32x / 8x compression, 8 latent channels."""
    vae = AutoencoderKLLTX2Video(
        latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False), downsample_type=("spatiotemporal",) * 4,
        decoder_block_out_channels=(8, 8, 8), decoder_layers_per_block=(1, 1, 1, 1),
        decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False,) * 4,
        upsample_type=("spatiotemporal",) * 3, upsample_residual=(False,) * 3, upsample_factor=(1, 1, 1),
        timestep_conditioning=False, patch_size=4, patch_size_t=1, decoder_causal=False)
    gen = torch.Generator().manual_seed(seed + 1)
    vae.latents_mean.copy_(0.1 * torch.randn(LATENT_CHANNELS, generator=gen))
    vae.latents_std.copy_(0.5 + torch.rand(LATENT_CHANNELS, generator=gen))
    return vae


def _audio() -> tuple[AutoencoderKLLTX2Audio, LTX2Vocoder]:
    vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=AUDIO_CHANNELS, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    vocoder = LTX2Vocoder(in_channels=2 * 8, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[4, 4],
                          upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    return vae, vocoder


# a two-step `fym transfer` of a 17-frame 64x64 clip on the tiny pipeline, as the CLI tests run it
CLI_SETTINGS = {
    "model": {"dtype": "float32"}, "video": {"frames": 17, "height": 64, "width": 64, "fps": None},
    "heads": {"num_queries": 16}, "spatial": {"steps": 2, "rank": 4},
    "motion": {"steps": 2, "rank": 4, "keep_frames": 2}, "generate": {"steps": 2},
}


def build_tiny_ltx2_pipeline(path: Path, seed: int = 0, rope_type: str = "split", image_to_video: bool = False
                             ) -> Path:
    """Write a tiny LTX2Pipeline (or LTX2ImageToVideoPipeline) to `path`: 2 blocks, a video stream of 2 heads x 8
    channels and an audio stream of 2 heads x 4, the video VAE at LTX-2's compression, a one-layer Gemma 3."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    audio_vae, vocoder = _audio()
    kind = LTX2ImageToVideoPipeline if image_to_video else LTX2Pipeline
    kind(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(seed), audio_vae=audio_vae,
         text_encoder=_gemma(len(tokenizer)), tokenizer=tokenizer, connectors=_connectors(),
         transformer=_transformer(rope_type), vocoder=vocoder).save_pretrained(path)
    return path
