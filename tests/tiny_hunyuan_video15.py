"""Builds a tiny random-weight HunyuanVideo 1.5 text-to-video pipeline directory offline, in diffusers'
save_pretrained layout.

Every model class is the one a real checkpoint uses (Qwen2.5-VL's text model, a T5 encoder for the byT5 glyph
prompt with the real `ByT5Tokenizer`, `AutoencoderKLHunyuanVideo15`, `HunyuanVideo15Transformer3DModel`,
`FlowMatchEulerDiscreteScheduler`, the `ClassifierFreeGuidance` guider), so loading goes through the same code path
as the released models; only the sizes are tiny. The Qwen tokenizer is a word-level fast tokenizer over a fixed
vocabulary whose chat template stands in for Qwen's: the pipeline crops the first 108 tokens of the templated prompt
(its system message, `prompt_template_encode_start_idx`), so the template writes 108 `sys` tokens before the
user's words.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    ByT5Tokenizer,
    PreTrainedTokenizerFast,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    T5Config,
    T5EncoderModel,
)

WORDS = (
    "a", "tiger", "walks", "through", "snow", "robot", "dog", "runs", "cat", "jumps", "red", "blue", "green",
    "car", "drives", "road", "the", "in", "on", "of", "and", "with", "bird", "flies", "sky",
)
SYSTEM_TOKENS = 108  # HunyuanVideo15Pipeline.prompt_template_encode_start_idx
LATENT_CHANNELS = 4
HEADS, HEAD_DIM, LAYERS = 2, 16, 2  # head_dim 16 = RoPE axes (4 time, 6 rows, 6 columns)
ROPE_AXES = (4, 6, 6)
IMAGE_DIM = 8  # image_embed_dim: the pipeline feeds 729 zero SigLIP tokens of this width for text-to-video
GUIDANCE = 6.0
SHIFT = 5.0
CHAT_TEMPLATE = ("{{ 'sys ' * " + str(SYSTEM_TOKENS) + " }}{% for m in messages %}{% if m['role'] == 'user' %}"
                 "{{ m['content'] }}{% endif %}{% endfor %}")


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "sys": 3} | {w: i + 4 for i, w in enumerate(dict.fromkeys(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _text_encoder(vocab: int) -> Qwen2_5_VLTextModel:
    return Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    ))


def _byt5(tokenizer: ByT5Tokenizer) -> T5EncoderModel:
    return T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    ))


def _vae() -> AutoencoderKLHunyuanVideo15:
    """16x spatial, 4x temporal, as the released VAE; 8 channels per block."""
    return AutoencoderKLHunyuanVideo15(latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8, 8),
                                       layers_per_block=1)


def _transformer() -> HunyuanVideo15Transformer3DModel:
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM, num_layers=LAYERS, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1,
        patch_size_t=1, text_embed_dim=32, text_embed_2_dim=16, image_embed_dim=IMAGE_DIM, rope_axes_dim=ROPE_AXES,
        target_size=32, task_type="t2v",
    )


def build_tiny_hunyuan_video15_pipeline(path: Path, seed: int = 0) -> Path:
    """Write a tiny HunyuanVideo15Pipeline to `path` (2 dual-stream layers of 2 heads x 16 channels, a 4-channel VAE
    with 16x / 4x strides, flow shift 5 as the released 480p text-to-video scheduler, guidance 6)."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    tokenizer_2 = ByT5Tokenizer()
    HunyuanVideo15Pipeline(
        text_encoder=_text_encoder(len(tokenizer)), tokenizer=tokenizer, transformer=_transformer(), vae=_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), text_encoder_2=_byt5(tokenizer_2),
        tokenizer_2=tokenizer_2, guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE),
    ).save_pretrained(path)
    return path
