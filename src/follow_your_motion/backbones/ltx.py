"""The LTX-Video family (diffusers `LTXPipeline`, `LTXVideoTransformer3DModel`, `AutoencoderKLLTXVideo`) behind
the backbone interface: LTX-Video 0.9.x text-to-video, one transformer for all noise levels.

The VAE compresses 32x in space and 8x in time (pixel frames 8k+1) and the transformer's patch is 1, so every
latent cell is one token. The pipeline packs latents (B, C, F, h, w) into tokens itself, frame-major (f, h, w),
and `predict` does the same (`LTXPipeline._pack_latents` / `_unpack_latents`).

Self-attention is `transformer_blocks.N.attn1` with separate to_q/to_k/to_v/to_out.0 projections; `attn2` is
cross-attention to the T5 prompt and not a LoRA target. q and k are RMS-normalised across all heads (like Wan),
and the rotary embedding is applied over the whole inner width before the heads are split: its channel pairs
cycle through (time, row, column) coordinates, which the transformer computes from the latent grid scaled by
`rope_interpolation_scale` (time: vae temporal stride / frame rate, i.e. seconds; space: the vae stride).
Adaptive RoPE replaces only the time coordinate of each frame's tokens, through the transformer's own
`video_coords` input.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from diffusers import LTXPipeline
from diffusers.models.transformers.transformer_ltx import apply_rotary_emb
from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from .diffusers_base import DiffusersBackbone, PositionedRotary, self_attention_sites
from .experts import AttentionSite, Expert
from .inputs import Conditioning, VideoGeometry
from .loading import keep_file_values, save_pipeline_lora
from .lora_files import COMFY_PREFIX, comfyui_to_peft, is_comfyui_lora, loading_lora

FRAME_RATE = 25  # LTXPipeline.__call__'s default `frame_rate`: the time axis of the RoPE is in seconds of it
TEXT_LENGTH = 128  # LTXPipeline.__call__'s default `max_sequence_length` of the T5 prompt
# The clip size the training noise levels are shifted for: LTXPipeline.__call__'s defaults (161 frames of
# 512x704), as the `ltx` recipe in recipes.py. The sampler shifts by exp(mu), mu growing with the token count.
SHIFT_FRAMES, SHIFT_SIZE = 161, (512, 704)
# diffusers' LTX-Video docs, for the timestep-aware VAE of LTX-Video 0.9.1 and later
DECODE_TIMESTEP, DECODE_NOISE_SCALE = 0.05, 0.025


class PositionedRope(PositionedRotary):
    """LTX-Video's rotary embedding whose temporal coordinates can be replaced for one forward pass: with
    `frame_positions` set, it builds the video coordinates the stock module would build from the grid, with the
    frame axis at those positions, and hands them to the stock module as `video_coords`. Its rows and columns are
    spaced through `rope_interpolation_scale` (`transformer_output`), not here."""

    def video_coords(self, batch: int, num_frames: int, height: int, width: int,
                     scale: tuple[float, float, float], device: torch.device) -> torch.Tensor:
        """(B, 3, S) coordinates, scaled as `_prepare_video_coords` scales them, before its division by the base
        sizes (which the stock module applies to `video_coords`): the same float32 operations in the same order,
        so positions 0..F-1 give exactly the stock tables."""
        rope = self.inner
        grid_f = self.frame_positions.detach().to(device, torch.float32)
        grid_h = torch.arange(height, dtype=torch.float32, device=device)
        grid_w = torch.arange(width, dtype=torch.float32, device=device)
        grid = torch.stack(torch.meshgrid(grid_f, grid_h, grid_w, indexing="ij"), dim=0)
        coords = torch.stack([grid[0] * scale[0] * rope.patch_size_t,
                              grid[1] * scale[1] * rope.patch_size,
                              grid[2] * scale[2] * rope.patch_size])
        return coords.flatten(1, 3).unsqueeze(0).expand(batch, -1, -1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        rope_interpolation_scale: tuple[float, float, float] | None = None,
        video_coords: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frame_positions is None:
            return self.inner(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords)
        if video_coords is not None or rope_interpolation_scale is None:
            raise InputError("frame positions need the grid and rope_interpolation_scale, not video_coords")
        if len(self.frame_positions) != num_frames:
            raise InputError(f"{len(self.frame_positions)} frame positions for {num_frames} latent frames")
        coords = self.video_coords(hidden_states.shape[0], num_frames, height, width, rope_interpolation_scale,
                                   hidden_states.device)
        return self.inner(hidden_states, video_coords=coords)


def attention_sites(transformer: nn.Module) -> list[AttentionSite]:
    """LTX's self-attention (`transformer_blocks.N.attn1`): video tokens only, q/k RMS-normalised across heads."""
    return self_attention_sites(transformer, "transformer_blocks.{i}.attn1", text_tokens="none",
                                qk_norm="across_heads")


# LTXPipeline's calculate_shift arguments where the scheduler config has none: base_image_seq_len,
# max_image_seq_len, base_shift, max_shift
SHIFT_DEFAULTS = (256, 4096, 0.5, 1.15)


def sampler_shift(scheduler_config: dict, tokens: int, defaults: tuple[float, float, float, float] = SHIFT_DEFAULTS
                  ) -> float:
    """The shift LTXPipeline's sampler applies to a video of `tokens` tokens: it passes mu = calculate_shift(tokens)
    to the scheduler, whose exponential time shift exp(mu) / (exp(mu) + 1/s - 1) is the flow shift exp(mu) (the
    linear one is the shift mu). A scheduler without dynamic shifting uses its fixed `shift`. `defaults`: the
    pipeline's values of the shift settings its scheduler config lacks (LTX-2's pipelines have their own)."""
    if not scheduler_config.get("use_dynamic_shifting"):
        return float(scheduler_config.get("shift", 1.0))
    keys = ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift")
    mu = calculate_shift(tokens, *(scheduler_config.get(key, value) for key, value in zip(keys, defaults, strict=True)))
    return math.exp(mu) if scheduler_config.get("time_shift_type", "exponential") == "exponential" else mu


def comfyui_to_diffusers(state: dict[str, torch.Tensor], pipeline: type = LTXPipeline
                         ) -> tuple[dict[str, torch.Tensor], dict]:
    """A ComfyUI-native LTXV (or, `pipeline` LTX2Pipeline, LTX-2) LoRA as diffusers' keys
    (`transformer.<module>.lora_A.weight`; renamed by the pipeline's own converter) and the adapter config they need,
    with `transformer.` keys (`lora_files.comfyui_to_peft`)."""
    def rename(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key.removeprefix("transformer."): value for key, value in pipeline.lora_state_dict(weights).items()}

    converted, config = comfyui_to_peft(state, rename, missing_alpha_is_rank=True)
    return ({f"transformer.{key}": value for key, value in converted.items()},
            {f"transformer.{key}": value for key, value in config.items()})


class LightricksBackbone(DiffusersBackbone):
    """What LTX-Video and LTX-2 do alike (their pipelines pack, normalise and load LoRAs with the same code): the
    geometry from LTX VAE and transformer configs, the sampler's token-count shift, packed tokens, the VAE's
    normalised latents, and LoRA files through `lora_pipeline`'s loader (diffusers' keys, or ComfyUI's through its
    converter)."""

    lora_pipeline: ClassVar[type]  # the pipeline class whose static helpers and LoRA loader the family uses
    lora_kind: ClassVar[str]  # how a refused LoRA file is named ("an LTX-Video LoRA")
    shift_defaults: ClassVar[tuple[float, float, float, float]] = SHIFT_DEFAULTS

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """The VAE's compression ratios (as AutoencoderKLLTXVideo and AutoencoderKLLTX2Video derive them where
        their config gives none) and the transformer's patch."""
        scaling = 2 ** sum(vae["spatio_temporal_scaling"])
        return VideoGeometry(
            temporal_stride=vae.get("temporal_compression_ratio") or vae["patch_size_t"] * scaling,
            spatial_stride=vae.get("spatial_compression_ratio") or vae["patch_size"] * scaling,
            patch=(transformer["patch_size_t"], transformer["patch_size"], transformer["patch_size"]),
        )

    def clip_shift(self, frames: int, height: int, width: int) -> float:
        """The shift the pipeline's sampler gives a clip of this size (it grows with the token count)."""
        tokens = math.prod(self.geometry.token_grid(frames, height, width))
        return sampler_shift(dict(self.pipe.scheduler.config), tokens, self.shift_defaults)

    def sampler_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """The pipeline steps on packed tokens (B, S, C)."""
        pt, p, _ = self.geometry.patch
        return self.lora_pipeline._pack_latents(latents, p, pt)

    def method_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        pt, p, _ = self.geometry.patch
        return self.lora_pipeline._unpack_latents(latents, *self.geometry.token_grid(*size), p, pt)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """The VAE latent's mode, normalised with the VAE's latents_mean/std as the pipeline does."""
        vae = self.pipe.vae
        dist = vae.encode(video[None].to(vae.device, vae.dtype)).latent_dist
        latents = self.lora_pipeline._normalize_latents(dist.mode().float().cpu(), vae.latents_mean.float().cpu(),
                                                        vae.latents_std.float().cpu(), vae.config.scaling_factor)
        return latents.to(self.device)

    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        save_pipeline_lora(self.lora_pipeline, path, state_dict, metadata)

    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        """A diffusers file through the pipeline's `load_lora_weights`, as users load it; a ComfyUI-native file
        through diffusers' key converter of the family and its loader, with its alpha in the adapter config. The
        file's float32 values are kept."""
        with loading_lora(path, self.lora_kind):
            state = load_file(str(path))
            if is_comfyui_lora(list(state)):
                state, metadata = comfyui_to_diffusers(state, self.lora_pipeline)
                self.lora_pipeline.load_lora_into_transformer(state, transformer=expert.module, adapter_name=adapter,
                                                              metadata=metadata, _pipeline=self.pipe)
            else:
                self.pipe.load_lora_weights(str(path), adapter_name=adapter)
        keep_file_values(expert.module, adapter, state)


class LTXBackbone(LightricksBackbone):
    """LTX-Video through diffusers. `frame_rate` is the rate the RoPE's time axis assumes in tuning and sampling
    (LTXPipeline's default 25); `text_length` the padded T5 prompt length (128)."""

    name = "ltx"
    pipelines = (LTXPipeline,)
    pipeline_kind = "an LTX-Video text-to-video pipeline"
    lora_pipeline = LTXPipeline
    lora_kind = "an LTX-Video LoRA"

    def __init__(self, pipe: LTXPipeline, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0, frame_rate: int = FRAME_RATE, text_length: int = TEXT_LENGTH) -> None:
        transformer = pipe.transformer
        transformer.rope = PositionedRope(transformer.rope)
        super().__init__(pipe, [Expert("", transformer, attention_sites(transformer))], device)
        self.frame_rate = frame_rate
        self.text_length = text_length
        self.place(offload, blocks_to_swap)
        self.geometry = self.config_geometry(dict(pipe.vae.config), dict(transformer.config))
        # as LTXPipeline.__call__ builds it: time in seconds per latent frame, space in pixels per latent cell
        self.rope_interpolation_scale = (
            pipe.vae_temporal_compression_ratio / frame_rate,
            pipe.vae_spatial_compression_ratio,
            pipe.vae_spatial_compression_ratio,
        )
        self.flow_shift = self.clip_shift(SHIFT_FRAMES, *SHIFT_SIZE)  # where no clip is known: the recipe's size

    # -- encoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """The T5 embeddings (1, L, D) and their attention mask (1, L): LTX's cross-attention masks the padding."""
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompt, do_classifier_free_guidance=False, max_sequence_length=self.text_length, device=self.device
        )
        return Conditioning({"text": embeds.to(self.dtype), "text_mask": mask})

    # -- the transformers -----------------------------------------------------------------------
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of LTXPipeline: packed tokens, the timestep on the 0..1000 scale (sigma * 1000, what the
        pipeline passes from the scheduler), the prompt with its mask, the grid and rope_interpolation_scale.
        LTX's positions are pixel coordinates (latent cell x pixels per cell), so `spatial_stride` s is s times
        the pixels per cell of a shrunk clip: the positions its cells have on the full-size frame."""
        pt, p, _ = self.geometry.patch
        frames, rows, cols = self.token_grid(latents)
        seconds, cell, _ = self.rope_interpolation_scale
        out = self.denoiser(expert)(
            hidden_states=LTXPipeline._pack_latents(latents.to(self.dtype), p, pt),
            encoder_hidden_states=cond.tensors["text"].to(self.dtype),
            timestep=timesteps.to(latents.device),
            encoder_attention_mask=cond.tensors["text_mask"],
            num_frames=frames,
            height=rows,
            width=cols,
            rope_interpolation_scale=(seconds, cell * spatial_stride, cell * spatial_stride),
            return_dict=False,
        )[0]
        return LTXPipeline._unpack_latents(out, frames, rows, cols, p, pt)

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What LTXVideoAttnProcessor computes before attention: norm_q(to_q(h)), the rotary embedding over the
        inner width, then the split into heads; tokens are frame-major, as packed."""
        hidden = args[0] if args else kwargs["hidden_states"]
        rotary = args[3] if len(args) > 3 else kwargs["image_rotary_emb"]
        q = apply_rotary_emb(attn.norm_q(attn.to_q(hidden)), rotary).unflatten(2, (attn.heads, -1))
        k = apply_rotary_emb(attn.norm_k(attn.to_k(hidden)), rotary).unflatten(2, (attn.heads, -1))
        return q, k

    @staticmethod
    def comfyui_key(module_name: str) -> str:
        """ComfyUI's LTXV model has diffusers' module names (`transformer_blocks.N.attn1.to_q`), under
        `diffusion_model.`: what diffusers' `_convert_non_diffusers_ltxv_lora_to_diffusers` strips."""
        return f"{COMFY_PREFIX}{module_name}"

    # -- generation -----------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """LTXPipeline itself, at `frame_rate`; its resolution-dependent shift is its own."""
        decode = ({"decode_timestep": DECODE_TIMESTEP, "decode_noise_scale": DECODE_NOISE_SCALE}
                  if self.pipe.vae.config.timestep_conditioning else {})
        return self.pipe(**call, frame_rate=self.frame_rate, guidance_scale=guidance,
                         max_sequence_length=self.text_length, **decode).frames[0]
