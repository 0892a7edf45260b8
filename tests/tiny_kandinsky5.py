"""Builds a tiny random-weight Kandinsky 5 text-to-video pipeline directory offline, in diffusers' save_pretrained
layout.

Every model class is the one `Kandinsky5T2VPipeline` declares (Kandinsky5Transformer3DModel,
AutoencoderKLHunyuanVideo, Qwen2_5_VLForConditionalGeneration, CLIPTextModel, FlowMatchEulerDiscreteScheduler), so
loading goes through the same code path as the released models; only the sizes are tiny. Both tokenizers are
word-level fast tokenizers over a fixed vocabulary (unknown words: `<unk>`): the declared Qwen2VLProcessor cannot be
built without torchvision, and the pipeline uses only its text part (`tokenizer(text=..., images=None, videos=None)`,
`decode`), which a fast tokenizer serves the same way; the pipeline crops the first 128 tokens of its prompt
template (`prompt_template_encode_start_idx`), which this tokenizer splits into 130, so the prompt's words and the
template's last tokens stay.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    Kandinsky5T2VPipeline,
    Kandinsky5Transformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

WORDS = ("a", "robot", "walks", "cat", "jumps", "dog", "runs", "the", "in", "snow", "red", "car")
LATENT_CHANNELS = 4
HEADS, HEAD_DIM, LAYERS = 2, 16, 2  # head_dim 16 = RoPE axes (4 time, 6 rows, 6 columns)
ROPE_AXES = (4, 6, 6)
SHIFT = 5.0  # not a release value: the backbone takes the checkpoint's scheduler shift, whatever it is


def _vocabulary() -> dict[str, int]:
    return {"<pad>": 0, "<|endoftext|>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}


def _word_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(vocab=_vocabulary(), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(), pad_token="<pad>", eos_token="<|endoftext|>",
                                   unk_token="<unk>")


def _qwen(vocab: int) -> Qwen2_5_VLForConditionalGeneration:
    text = {"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
            "bos_token_id": 1, "eos_token_id": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}}
    vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
              "fullatt_block_indexes": [0]}
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                                                pad_token_id=0, eos_token_id=1))


def _clip() -> tuple[CLIPTextModel, PreTrainedTokenizerFast]:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(), pad_token="<pad>",
                                        eos_token="<|endoftext|>", unk_token="<unk>", bos_token="<|endoftext|>")
    model = CLIPTextModel(CLIPTextConfig(vocab_size=len(_vocabulary()), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                         projection_dim=16, pad_token_id=0, bos_token_id=1, eos_token_id=1))
    return model, tokenizer


def _vae() -> AutoencoderKLHunyuanVideo:
    """8x spatial, 4x temporal, as the released (HunyuanVideo) VAE; 8 channels per block."""
    return AutoencoderKLHunyuanVideo(
        latent_channels=LATENT_CHANNELS, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4)


def _transformer() -> Kandinsky5Transformer3DModel:
    """Random modulation weights: diffusers initialises them to zero, which gates every block shut (attention would
    change nothing in a model nobody trained)."""
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=LATENT_CHANNELS, out_visual_dim=LATENT_CHANNELS, in_text_dim=32, in_text_dim2=16, time_dim=16,
        patch_size=(1, 2, 2), model_dim=HEADS * HEAD_DIM, ff_dim=64, num_text_blocks=1, num_visual_blocks=LAYERS,
        axes_dims=ROPE_AXES, visual_cond=True)
    for name, parameter in transformer.named_parameters():
        if "modulation" in name:
            torch.nn.init.normal_(parameter, std=0.3)
    return transformer


def build_tiny_kandinsky5_pipeline(path: Path, seed: int = 0) -> Path:
    """Write a tiny Kandinsky5T2VPipeline to `path` (2 visual blocks of 2 heads x 16 channels, 1 text block, the
    visual condition channels of the released text-to-video transformers, a 4-channel VAE with 8x / 4x strides)."""
    torch.manual_seed(seed)
    processor = _qwen_tokenizer()
    clip, clip_tokenizer = _clip()
    Kandinsky5T2VPipeline(
        transformer=_transformer(), vae=_vae(), text_encoder=_qwen(len(_vocabulary())), tokenizer=processor,
        text_encoder_2=clip, tokenizer_2=clip_tokenizer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
    ).save_pretrained(path)
    return path
